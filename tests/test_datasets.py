"""veRL-format data: the project's example parquet in the release's layout; the release's own mini parquet
(when it sits beside the checkout) loads unchanged and has the example's schema; JSONL with the same fields;
row-level errors; skipping; streaming; seeded shuffling; the cursor."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
from pathlib import Path

import pytest

from agentrl.data.example import QUESTIONS, example_records, example_schema, write_example
from agentrl.data.prompts import DataCursor, DataError, PromptStream, check_file, parse_row, records
from tests.conftest import ROOT

# The MMSearch-R1 release's example file, where a checkout has shared/ beside it (AGENTRL_RELEASE_MINI moves it)
RELEASE_MINI = Path(os.environ.get("AGENTRL_RELEASE_MINI")
                    or ROOT.parent / "shared" / "data" / "mmsearch_r1_mini_data.pq")


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def record(i: int, **over) -> dict:
    r = {"prompt": [{"role": "user", "content": f"<image>Question {i}?"}], "images": [{"bytes": png(), "path": None}],
         "reward_model": {"ground_truth": f"answer {i}", "candidate_answers": json.dumps([f"alt {i}"]),
                          "style": "rule"},
         "data_source": "fvqa", "image_urls": None, "data_id": f"fvqa_train_{i}", "category": "search_required"}
    r.update(over)
    return r


def write_jsonl(path, records) -> str:
    path.write_text("\n".join(json.dumps(r, default=lambda b: None) for r in records) + "\n")
    return str(path)


def test_the_example_parquet_is_veRL_data_about_the_demo_tiles(example_data):
    rows = list(PromptStream(str(example_data), shuffle=False).once())
    assert [r.row_id for r in rows] == [0, 1, 2, 3, 4] and [r.data_id for r in rows] == [f"row-{i}" for i in range(5)]
    assert [r.question for r in rows] == [QUESTIONS[k] for k in ("colour", "colour", "name", "name", "reversed")]
    assert rows[0].data_source == "agentrl_example/colour"
    assert rows[4].ground_truth == [rows[4].candidate_answers[0].lower()]
    assert all(len(r.images) == 1 and r.images[0][:2] == b"\xff\xd8" for r in rows)  # one JPEG each


def test_the_example_is_deterministic_from_its_seed(tmp_path):
    a, b = write_example(tmp_path / "a.parquet", seed=3), write_example(tmp_path / "b.parquet", seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert example_records(seed=3) != example_records(seed=4)
    assert len(example_records(rows=12)) == 12


def test_the_local_tools_answer_the_example_questions(example_data):
    """Image search over the demo index finds each question's tile first; its title names the tile and
    its colour, so every answer (the name reversed included) follows from it."""
    from agentrl.data.synthetic import demo_image_index
    from agentrl.envs.image_search import LocalImageIndex

    index = LocalImageIndex(demo_image_index())
    for row in PromptStream(str(example_data), shuffle=False).once():
        title = index.search(row.images[0], 1)[0][0]
        name, colour = title.split(", a ")[0], title.split(", a ")[1].split()[0]
        assert row.ground_truth[0] in (colour, name, name[::-1])


def test_the_release_mini_parquet_loads_unchanged_with_the_example_schema(example_data):
    if not RELEASE_MINI.is_file():
        pytest.skip(reason=f"the release's mini parquet is not at {RELEASE_MINI} (shared/ beside the checkout)")
    import pyarrow.parquet as pq

    rows = list(itertools.islice(PromptStream(str(RELEASE_MINI), shuffle=False), 5))
    first = rows[0]
    assert first.question == "What is the country of origin of this food?"
    assert first.ground_truth == ["Spain"] and "Kingdom of Spain" in first.candidate_answers
    assert first.data_source == "mmsearch_r1/infoseek_train_split"
    assert len(first.images) == 1 and first.images[0][:2] in (b"\xff\xd8", b"\x89P")  # JPEG or PNG bytes
    assert [r.row_id for r in rows] == [0, 1, 2, 3, 4]
    assert pq.read_schema(RELEASE_MINI).equals(example_schema())  # the same columns and types
    assert pq.read_schema(example_data).equals(example_schema())


def test_jsonl_with_the_same_fields(tmp_path):
    recs = [record(i, images=[]) for i in range(3)]
    rows = list(itertools.islice(PromptStream(write_jsonl(tmp_path / "d.jsonl", recs), shuffle=False), 3))
    assert [r.question for r in rows] == ["Question 0?", "Question 1?", "Question 2?"]
    assert rows[2].data_id == "fvqa_train_2" and rows[2].category == "search_required"


@pytest.mark.parametrize("override,fieldname", [
    ({"prompt": []}, "prompt"),
    ({"reward_model": {"ground_truth": "  ", "style": "rule"}}, "reward_model.ground_truth"),
    ({"images": [{"bytes": b"not an image", "path": None}]}, "images[0]"),
    ({"reward_model": None}, "reward_model"),
])
def test_bad_rows_name_the_row_and_the_field(override, fieldname):
    with pytest.raises(DataError, match=re.escape(f"data.pq row 3: field '{fieldname}'")):
        parse_row(record(3, **override), 3, "data.pq")


def test_bad_rows_fail_the_stream_or_are_skipped_and_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [record(0), record(1, images=[{"bytes": b"corrupt", "path": None}]), record(2),
            record(3, reward_model={"ground_truth": "", "candidate_answers": "[]", "style": "rule"})]
    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pylist(recs), path)
    with pytest.raises(DataError, match="row 1: field 'images\\[0\\]'"):
        list(itertools.islice(PromptStream(path, shuffle=False), 4))
    stream = PromptStream(path, shuffle=False, on_bad_row="skip")
    rows = list(itertools.islice(stream, 4))  # two epochs of the two good rows
    assert [r.row_id for r in rows] == [0, 2, 0, 2]
    assert stream.skipped == {"images[0]": 1, "reward_model.ground_truth": 1}


def test_streaming_reads_in_batches_and_the_shuffle_is_seeded(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "big.parquet")
    pq.write_table(pa.Table.from_pylist([record(i, images=[]) for i in range(50)]), path, row_group_size=7)

    def order(seed):
        return [r.row_id for r in itertools.islice(PromptStream(path, seed=seed, shuffle_buffer=8, batch_rows=5), 50)]

    a, b, c = order(1), order(1), order(2)
    assert a == b and a != c and sorted(a) == list(range(50)) and a != list(range(50))


def test_the_cursor_resumes_where_the_stream_stopped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [record(i, images=[]) for i in range(10)])
    full = [r.row_id for r in itertools.islice(PromptStream(path, seed=3), 15)]
    s = PromptStream(path, seed=3)
    first = [r.row_id for r in itertools.islice(iter(s), 12)]
    assert s.cursor == DataCursor(epoch=1, index=2)
    resumed = PromptStream(path, seed=3, cursor=DataCursor(**vars(s.cursor)))
    assert first + [r.row_id for r in itertools.islice(iter(resumed), 3)] == full


# ---- every field's type is checked; a bad row is one line naming the file, the row and the field ----
def jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize("override,fieldname", [
    ({"prompt": "What is this?"}, "prompt"),
    ({"prompt": ["What is this?"]}, "prompt[0]"),
    ({"prompt": [{"role": 1, "content": "q"}]}, "prompt[0].role"),
    ({"prompt": [{"role": "user", "content": 7}]}, "prompt[0].content"),
    ({"prompt": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]}, "prompt[0].content[0]"),
    ({"prompt": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "prompt[0].content[0].text"),
    ({"prompt": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
     "prompt[0].content[0]"),
    ({"reward_model": {"ground_truth": {"a": 1}}}, "reward_model.ground_truth"),
    ({"reward_model": {"ground_truth": ["ok", ["nested"]]}}, "reward_model.ground_truth[1]"),
    ({"reward_model": "Paris"}, "reward_model"),
    ({"reward_model": {"ground_truth": "x", "candidate_answers": 5}}, "reward_model.candidate_answers"),
    ({"reward_model": {"ground_truth": "x", "candidate_answers": '{"a": 1}'}}, "reward_model.candidate_answers"),
    ({"reward_model": {"ground_truth": "x", "candidate_answers": "[oops"}}, "reward_model.candidate_answers"),
    ({"reward_model": {"ground_truth": "x", "candidate_answers": [{"a": 1}]}}, "reward_model.candidate_answers[0]"),
    ({"images": "photo.png"}, "images"),
    ({"images": [42]}, "images[0]"),
    ({"images": [{"bytes": "not bytes", "path": None}]}, "images[0]"),
    ({"images": [{"bytes": None, "path": "no-such.png"}]}, "images[0]"),
    ({"images": [{"bytes": jpeg()[:400], "path": None}]}, "images[0]"),  # truncated JPEG
    ({"images": [{"bytes": png()[:-20], "path": None}]}, "images[0]"),  # truncated PNG
    ({"image_urls": 5}, "image_urls"),
    ({"image_urls": ["https://x/a.png", None]}, "image_urls[1]"),
    ({"data_source": 3}, "data_source"),
    ({"category": ["search_required"]}, "category"),
    ({"data_id": {"id": 1}}, "data_id"),
    ({"extra_info": "fvqa_1"}, "extra_info"),
])
def test_every_field_of_the_wrong_type_names_the_row_and_the_field(override, fieldname):
    with pytest.raises(DataError, match=re.escape(f"data.pq row 3: field '{fieldname}': ")) as e:
        parse_row(record(3, **override), 3, "data.pq")
    assert e.value.field == fieldname and "\n" not in str(e.value)


def test_a_record_that_is_not_an_object_names_the_row():
    with pytest.raises(DataError, match=r"^data.pq row 3: expected an object of fields, got list$"):
        parse_row([1, 2], 3, "data.pq")


def test_chat_content_as_a_list_of_openai_parts_is_read_as_such():
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    content = [{"type": "text", "text": "<image>What is"}, {"type": "image"},
               {"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": "this?"},
               {"type": "image_url", "image_url": {"url": "https://example.org/a.jpg"}}]
    row = parse_row(record(0, prompt=[{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": content}]), 0, "d.jsonl")
    assert row.question == "What is\nthis?"  # text parts, not the list's repr
    assert row.images == [png(), png()]  # the `images` column's, then the inline one
    assert row.image_urls == ["https://example.org/a.jpg"]


def test_answers_may_be_numbers_and_candidates_a_list_or_a_json_string_of_one():
    row = parse_row(record(0, reward_model={"ground_truth": [1889, "1889 AD"], "candidate_answers": ["eighteen"]}),
                    0, "d")
    assert row.ground_truth == ["1889", "1889 AD"] and row.candidate_answers == ["eighteen"]
    assert parse_row(record(0), 0, "d").candidate_answers == ["alt 0"]


def test_jsonl_lines_that_are_not_objects_fail_or_are_skipped_with_rows_counted_as_everywhere(tmp_path):
    """Rows count from 0 over the non-blank lines, in a line's JSON error and in a field's error alike."""
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(record(0, images=[])), "", "[1, 2]", "{not json", json.dumps(record(4, prompt=[], images=[])),
             json.dumps(record(5, images=[]))]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "\xff"}\n')
    expected = [f"{path} row 1: not a JSON object (a JSON list)", f"{path} row 2: not valid JSON",
                f"{path} row 3: field 'prompt': missing or empty", f"{path} row 5: not UTF-8 text"]
    errors = []
    for index, raw in enumerate(records(str(path))):
        try:
            if isinstance(raw, DataError):
                raise raw
            parse_row(raw, index, str(path))
        except DataError as e:
            errors.append(str(e))
    assert [e for e, want in zip(errors, expected, strict=True) if not e.startswith(want)] == []
    with pytest.raises(DataError, match=re.escape(expected[0])):
        list(PromptStream(str(path), shuffle=False).once())
    stream = PromptStream(str(path), shuffle=False, on_bad_row="skip")
    assert [r.row_id for r in stream.once()] == [0, 4]
    assert stream.skipped == {"row": 3, "prompt": 1}


@pytest.mark.parametrize("name,content,why", [
    ("d.parquet", b"PAR1 truncated", "not a readable parquet file"),
    ("d.pq", b"", "not a readable parquet file"),
    ("d.csv", b"prompt,answer\nq,a\n", "unsupported data file (expected .parquet or .jsonl)"),
])
def test_a_corrupt_or_unsupported_file_is_one_line_naming_the_path(tmp_path, name, content, why):
    path = tmp_path / name
    path.write_bytes(content)
    for on_bad_row in ("fail", "skip"):
        with pytest.raises(DataError, match=re.escape(f"{path}: {why}")):
            next(iter(PromptStream(str(path), on_bad_row=on_bad_row)))


def test_a_missing_file_and_a_parquet_cut_short_name_the_path(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'no.parquet'}: not a file")):
        list(PromptStream(str(tmp_path / "no.parquet")).once())
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pylist([record(i, images=[]) for i in range(40)]), whole, row_group_size=8)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match=re.escape(f"{cut}: not a readable parquet file")):
        list(PromptStream(str(cut)).once())


def write_parquet_with_a_bad_row(path: Path, rows: int, bad: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [record(i, images=[]) for i in range(rows)]
    recs[bad]["reward_model"] = {"ground_truth": "", "candidate_answers": "[]", "style": "rule"}
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=50)
    return str(path)


def test_a_bad_row_deep_in_the_file_stops_the_stream_with_its_own_row_number(tmp_path):
    path = write_parquet_with_a_bad_row(tmp_path / "d.parquet", 600, bad=517)
    stream, seen = PromptStream(path, shuffle=False, batch_rows=64), []
    with pytest.raises(DataError, match=re.escape(f"{path} row 517: field 'reward_model.ground_truth': empty")):
        for row in stream.once():
            seen.append(row.row_id)
    assert seen == list(range(517))
    check = check_file(path, on_bad_row="skip")
    assert (check.rows, dict(check.skipped)) == (599, {"reward_model.ground_truth": 1})


def test_an_image_too_large_to_decode_is_refused_before_decoding():
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 12_000, 12_000, 8, 0, 0, 0, 0)  # 144 megapixels, in a few bytes
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    over_the_cap = r"row 0: field 'images\[0\]': .*12000x12000 pixels is over the limit of \d+ pixels"
    with pytest.raises(DataError, match=over_the_cap):
        parse_row(record(0, images=[{"bytes": bomb, "path": None}]), 0, "d.pq")


@pytest.mark.parametrize("kind", ["/proc/self/mem", "/dev/zero", "fifo"])
def test_a_data_source_or_image_path_that_is_no_regular_file_is_refused_before_it_is_read(tmp_path, capsys, kind):
    """`/proc/self/mem` calls itself a regular file of 0 bytes and fails half-read; `/dev/zero` never ends; a
    FIFO waits for a writer for ever. None is opened: one line, exit 2 (the whole file) or the row's error."""
    from agentrl.cli import main

    path = kind
    if kind == "fifo":
        path = str(tmp_path / "data.jsonl")
        os.mkfifo(path)
    assert main(["check-data", "configs/demo.yaml", f"data.source={path}"]) == 2
    assert capsys.readouterr().err == f"agentrl: {path}: not a file\n"
    rows = tmp_path / "rows.jsonl"
    row = {"prompt": [{"role": "user", "content": "What is this?"}], "reward_model": {"ground_truth": "x"},
           "images": [path]}
    rows.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=re.escape(f"cannot read image file '{path}' (not a regular file)")):
        list(PromptStream(str(rows), shuffle=False).once())


def test_a_timestamp_column_out_of_pythons_range_is_one_line_naming_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ts.parquet"
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "q"}]], "reward_model": [{"ground_truth": "x"}],
                             "crawled": pa.array([10**15], pa.timestamp("s"))}), path)  # past year 9999
    with pytest.raises(DataError, match=re.escape(f"{path}: a value that cannot be read (OverflowError")):
        list(PromptStream(str(path), shuffle=False).once())


def test_a_tiny_parquet_of_huge_repeated_strings_is_refused_in_bounded_memory(tmp_path):
    """10 rows of one 50 MB string compress to a few KB; reading them row by row as Python strings took
    1.6 GB to check. Rows are measured as stored (dictionary-encoded), before Python copies them."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "huge.parquet"
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "q"}]] * 10,
                             "reward_model": [{"ground_truth": "x"}] * 10, "pad": ["x" * 50_000_000] * 10}),
                   path, compression="zstd")
    assert path.stat().st_size < 10_000
    # the child's own peak: VmHWM starts again at exec (ru_maxrss would count the forked parent's pages)
    code = ("import re, sys; from agentrl.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    r = subprocess.run([sys.executable, "-c", code, "check-data", "configs/demo.yaml", f"data.source={path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    rc, peak_mib = map(int, r.stdout.split()[-2:])
    assert rc == 2 and r.stderr == f"agentrl: {path}: a row of 48 MB, over the 32 MB a row may have\n"
    assert peak_mib < 500, peak_mib
