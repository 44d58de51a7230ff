"""veRL-format data: the release's own mini parquet loads unchanged; JSONL with the same fields;
row-level errors; skipping; streaming; seeded shuffling; the cursor."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest

from agentrl.data.prompts import DataCursor, DataError, PromptStream, parse_row
from tests.conftest import ROOT

MINI = str(ROOT.parent / "shared" / "data" / "mmsearch_r1_mini_data.pq")  # shared/ sits beside the checkout


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


def test_the_release_mini_parquet_loads_unchanged():
    rows = list(itertools.islice(PromptStream(MINI, shuffle=False), 5))
    first = rows[0]
    assert first.question == "What is the country of origin of this food?"
    assert first.ground_truth == ["Spain"] and "Kingdom of Spain" in first.candidate_answers
    assert first.data_source == "mmsearch_r1/infoseek_train_split"
    assert len(first.images) == 1 and first.images[0][:2] in (b"\xff\xd8", b"\x89P")  # JPEG or PNG bytes
    assert [r.row_id for r in rows] == [0, 1, 2, 3, 4]


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


def test_a_training_config_with_a_bad_data_file_fails_before_actors_start(tmp_path):
    from agentrl.cli import main

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"role": "user", "content": "q"}]}])
    assert main(["train", "configs/demo.yaml", f"data.source={path}"]) == 2
