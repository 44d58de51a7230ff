"""Hostile or broken config input (files and overrides): one line naming the file and what is wrong, exit 2,
no traceback, no code run, bounded time and memory; and the documented `on`/`off` values read as strings."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from agentrl.cli import main
from agentrl.config import load_config

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))

# (what, the file's bytes, what the one line says)
BAD_FILES = [
    ("an alias bomb (a billion elements)", ALIAS_BOMB.encode(), "YAML aliases (*name) are not read"),
    ("a syntax error", b"trainer:\n  total_steps: [1, 2\n", "line "),
    ("a python tag", b"trainer: !!python/object/apply:os.system ['touch {marker}']\n", "line 1"),
    ("a duplicate key", b"trainer:\n  total_steps: 3\n  total_steps: 4\n", "duplicate key 'total_steps'"),
    ("bytes that are not UTF-8", b"trainer:\n  run_name: caf\xe9\n", "not UTF-8 text"),
    ("a list at the top", b"- trainer\n- model\n", "a config is a mapping of sections"),
    ("a section that is null", b"trainer: null\n", "trainer"),
    ("a section that is a number", b"trainer: 5\n", "trainer"),
    ("a value of the wrong type", b"trainer: {total_steps: many}\n", "total_steps"),
    ("an interpolation of itself", b"trainer: {run_name: '${trainer.run_name}'}\n", "run_name"),
    ("an interpolation of nothing", b"trainer: {run_name: '${nope.nothing}'}\n", "nope"),
    ("nesting 3,000 deep", b"trainer: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested more than 64 deep"),
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("what,content,says", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_config_file_is_one_line_naming_it_and_exit_2(tmp_path, capsys, what, content, says):
    marker = tmp_path / "code-ran"
    path = tmp_path / "bad.yaml"
    path.write_bytes(content.replace(b"{marker}", str(marker).encode()))
    rss, t0 = peak_rss_mib(), time.monotonic()
    assert main(["check-data", str(path)]) == 2
    assert time.monotonic() - t0 < 5 and peak_rss_mib() - rss < 200
    err = capsys.readouterr().err
    assert err.startswith(f"agentrl: {path}: ") and err.count("\n") == 1 and says in err, err
    assert not marker.exists()


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_config_path_that_is_no_regular_file_is_refused_without_reading_it(tmp_path, capsys, special):
    path = special
    if special == "fifo":  # opened for reading, it would wait for a writer for ever
        path = str(tmp_path / "config.yaml")
        os.mkfifo(path)
    assert main(["check-data", path]) == 2
    assert capsys.readouterr().err == f"agentrl: {path}: not a regular file\n"


def test_a_bomb_in_an_override_is_refused_at_once(capsys):
    flow_bomb = "{" + ALIAS_BOMB.strip().replace("\n", ", ") + "}"  # the same bomb on one line
    t0 = time.monotonic()
    assert main(["check-data", "configs/demo.yaml", f"trainer.run_name={flow_bomb}"]) == 2
    assert main(["check-data", "configs/demo.yaml", "env.system_prompt=" + "[" * 3000]) == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err.splitlines()
    assert err == ["agentrl: override 'trainer.run_name': line 1: YAML aliases (*name) are not read",
                   "agentrl: override 'env.system_prompt': line 1: nested more than 64 deep"]
    assert main(["check-data", "configs/demo.yaml", "trainer.run_name=" + "x" * 100_000]) == 2
    assert "over the 65536 allowed" in capsys.readouterr().err


def test_on_and_off_are_the_strings_the_docs_give_in_files_and_overrides(tmp_path: Path):
    assert load_config("configs/demo.yaml", ["tools.cache.mode=off"]).tools.cache.mode == "off"
    path = tmp_path / "c.yaml"
    path.write_text("tools:\n  cache: {mode: off}\nreward:\n  options: {judge_cache: off}\n"
                    "trainer: {progress: false}\n")
    cfg = load_config(str(path))
    assert cfg.tools.cache.mode == "off" and cfg.reward.options["judge_cache"] == "off"
    assert cfg.trainer.progress is False  # YAML 1.2's booleans still are
