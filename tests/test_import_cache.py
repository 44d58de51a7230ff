"""`agentrl import-cache` writes only inside `--out`, whatever a data_id holds: an entry whose data_id is
not a plain folder name is refused and counted, the rest imported; an image that does not decode is
counted and its title kept."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

from agentrl.cli import main
from agentrl.envs.cache_import import import_pickle, safe_folder


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(out, format="PNG")
    return out.getvalue()


def entry(title: str, image: bytes | None = None) -> dict:
    return {"title_list": [title], "image_list": [image]}


def every_file(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, dirs, files in os.walk(root) for name in dirs + files}


def test_no_data_id_writes_outside_out_and_the_rest_is_imported(tmp_path, capsys):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)  # a folder already there that leads out
    hostile = ["../escaped", str(tmp_path / "absolute"), "a\0b", "", ".", "..", "sub/dir", "back\\slash",
               "x" * 300, "link"]
    cache = {"fvqa_1": entry("A red square", png()), 7: entry("Seven"), "broken": entry("Kept", b"not an image"),
             **{d: entry("hostile") for d in hostile}}
    src = tmp_path / "cache.pkl"
    src.write_bytes(pickle.dumps(cache))
    before = every_file(tmp_path)

    assert main(["import-cache", str(src), "--out", str(out), "--trust-pickle"]) == 0
    assert capsys.readouterr().out == (f"[agentrl] imported 3 cached image searches into {out}; "
                                       f"skipped 1 (unreadable image); skipped {len(hostile)} (unsafe data_id)\n")
    assert {p for p in every_file(tmp_path) - before if out not in p.parents} == set()
    assert sorted(os.listdir(out)) == ["7", "broken", "fvqa_1", "link"] and os.listdir(outside) == []
    assert sorted(os.listdir(out / "fvqa_1")) == ["img_000.png", "meta.json"]
    assert os.listdir(out / "broken") == ["meta.json"]
    assert json.loads((out / "broken" / "meta.json").read_text()) == {"title_list": ["Kept"]}


def test_a_data_id_is_a_folder_only_when_it_names_one_directly_inside_out(tmp_path):
    assert safe_folder(tmp_path, "fvqa_train_12") == tmp_path / "fvqa_train_12"
    assert safe_folder(tmp_path, 12) == tmp_path / "12"
    for data_id in ("..", "../x", "/etc", "a/b", "a\0", "", ".", "é" * 200):
        assert safe_folder(tmp_path, data_id) is None, data_id


def test_the_report_counts_what_was_imported_and_left_out(tmp_path):
    src = tmp_path / "c.pkl"
    src.write_bytes(pickle.dumps({"ok": entry("t", png()), "../bad": entry("t")}))
    report = import_pickle(str(src), str(tmp_path / "out"), trusted=True)
    assert report.imported == 1 and report.skipped == {"unsafe data_id": 1}
