"""The command line's one error policy: a user error (a bad config, data file or row, argument, or a missing
file) is one line on stderr that starts `agentrl: `, and exit 2, in every subcommand; an actor failure exits 1.
No test here starts Ray."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentrl.cli import main
from agentrl.console import LOG_LEVEL_ENV
from agentrl.errors import ActorFailure
from tests.conftest import ROOT, agentrl_cmd


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _pickle(path: Path, obj: object) -> str:
    return _write_bytes(path, pickle.dumps(obj))


def _data_rows(n: int, bad: int = -1) -> list[dict]:
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "reward_model": {"ground_truth": f"answer {i}", "candidate_answers": "[]", "style": "rule"}}
            for i in range(n)]
    if bad >= 0:
        rows[bad]["reward_model"]["ground_truth"] = ""
    return rows


def _deep_bad_parquet(d: Path, rows: int = 600, bad: int = 517) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_data_rows(rows, bad)), d / "deep.parquet", row_group_size=100)
    return str(d / "deep.parquet")


GOOD_SCORE_ROW = '{"turns": ["<answer>Paris</answer>"], "ground_truth": "Paris"}\n'
LONG_NUMBER = "1" * 5000  # past Python's 4,300-digit limit: json.loads raises a plain ValueError


def _score_row_with(options: str) -> str:
    return '{"turns": ["<answer>x</answer>"], "ground_truth": "x", "options": ' + options + "}\n"


@pytest.fixture(autouse=True)
def no_recorded_log_level(monkeypatch):
    """Each test starts with AGENTRL_LOG_LEVEL unset (a command run in-process records its level there)."""
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)


# (what is wrong, the command line given a scratch folder)
BAD_INPUTS: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("train: an unknown config key", lambda d: ["train", "configs/demo.yaml", "trainer.nope=1"]),
    ("train: a missing config file", lambda d: ["train", str(d / "nope.yaml")]),
    ("train: a bad log level", lambda d: ["train", "configs/demo.yaml", "trainer.log_level=loud"]),
    ("train: a bad data row", lambda d: ["train", "configs/demo.yaml",
                                         "data.source=" + _write(d / "d.jsonl", '{"prompt": []}\n')]),
    ("eval: a missing data file", lambda d: ["eval", "configs/eval_mini.yaml", "--data", str(d / "no.parquet")]),
    ("eval: a bad option value", lambda d: ["eval", "configs/eval_mini.yaml", "-n", "many"]),
    ("eval: no workflow", lambda d: ["eval", "configs/eval_mini.yaml", "--workflow", ","]),
    ("eval: no samples", lambda d: ["eval", "configs/eval_mini.yaml", "-n", "0"]),
    ("eval: a workflow the config cannot run", lambda d: ["eval", "configs/demo.yaml", "--workflow", "rag",
                                                          "--data", _write(d / "d.jsonl", "{}\n")]),
    ("eval: a file that is no summary", lambda d: ["eval", "--compare", _write(d / "summary.json", "[1]")]),
    ("eval: a missing summary", lambda d: ["eval", "--compare", str(d / "no.json")]),
    ("bench: an unknown config key", lambda d: ["bench", "async", "trainer.nope=1"]),
    ("bench: an unknown benchmark", lambda d: ["bench", "sync"]),
    ("bench: too few steps", lambda d: ["bench", "async", "--steps", "1"]),
    ("build-balanced: a bad -k", lambda d: ["build-balanced", "configs/eval_mini.yaml", "--data", "x.parquet",
                                            "--out", str(d / "b.parquet"), "-k", "0"]),
    ("build-balanced: no --out", lambda d: ["build-balanced", "configs/eval_mini.yaml", "--data", "x.parquet"]),
    ("build-balanced: a bad --ratio", lambda d: ["build-balanced", "configs/eval_mini.yaml", "--data", "x.parquet",
                                                 "--out", str(d / "b.parquet"), "--ratio", "1.5"]),
    ("build-balanced: a missing data file", lambda d: ["build-balanced", "configs/eval_mini.yaml", "--data",
                                                       str(d / "no.parquet"), "--out", str(d / "b.parquet")]),
    ("score: a missing file", lambda d: ["score", "--preset", "exact_match", str(d / "no.jsonl")]),
    ("score: an unknown preset", lambda d: ["score", "--preset", "nope", _write(d / "s.jsonl", "{}\n")]),
    ("score: a bad row", lambda d: ["score", "--preset", "exact_match", _write(d / "s.jsonl", "{not json\n")]),
    ("tool: an unknown tool", lambda d: ["tool", "nope"]),
    ("tool: a malformed --arg", lambda d: ["tool", "lookup", "--arg", "query"]),
    ("tool: a missing image", lambda d: ["tool", "image_search", "--config", "configs/eval_mini.yaml",
                                         "--arg", f"image={d / 'no.png'}"]),
    ("import-cache: a missing file", lambda d: ["import-cache", str(d / "no.pkl"), "--out", str(d / "c"),
                                                "--trust-pickle"]),
    ("import-cache: not a pickle", lambda d: ["import-cache", _write(d / "c.pkl", "text"), "--out", str(d / "c"),
                                              "--trust-pickle"]),
    ("serve-retriever: a missing corpus", lambda d: ["serve-retriever", "--corpus", str(d / "no.jsonl")]),
    ("serve-retriever: a bad port", lambda d: ["serve-retriever", "--port", "eighty"]),
    ("serve-retriever: a port out of range", lambda d: ["serve-retriever", "--port", "70000"]),
    ("serve-retriever: no room for a query", lambda d: ["serve-retriever", "--max-queries", "0"]),
    ("serve-retriever: an empty corpus", lambda d: ["serve-retriever", "--corpus", _write(d / "c.jsonl", "\n")]),
    ("serve-retriever: a corpus not JSONL", lambda d: ["serve-retriever", "--corpus", _write(d / "c.jsonl", "a,b\n")]),
    ("serve-retriever: a corpus not UTF-8", lambda d: ["serve-retriever", "--corpus",
                                                      _write_bytes(d / "c.jsonl", b'{"id": "\xff"}\n')]),
    ("serve-retriever: a document without contents", lambda d: ["serve-retriever", "--corpus",
                                                                _write(d / "c.jsonl", '{"id": "a", "title": "t"}')]),
    ("score: a row that is not an object", lambda d: ["score", "--preset", "exact_match",
                                                     _write(d / "s.jsonl", "[1]\n")]),
    ("score: turns that are not a list", lambda d: ["score", "--preset", "exact_match",
                                                   _write(d / "s.jsonl", '{"turns": "hi", "ground_truth": "x"}')]),
    ("score: a ground truth that is an object", lambda d: ["score", "--preset", "exact_match", _write(
        d / "s.jsonl", '{"turns": ["<answer>x</answer>"], "ground_truth": {"a": 1}}')]),
    ("score: options that are not an object", lambda d: ["score", "--preset", "exact_match", _write(
        d / "s.jsonl", '{"turns": [], "ground_truth": "x", "options": [1]}')]),
    ("score: options that are an empty list", lambda d: ["score", "--preset", "exact_match",
                                                        _write(d / "s.jsonl", _score_row_with("[]"))]),
    ("score: an option that is null", lambda d: ["score", "--preset", "mmsearch_r1", _write(
        d / "s.jsonl", _score_row_with('{"search_penalty": null}'))]),
    ("score: an option of 1e999 (infinite)", lambda d: ["score", "--preset", "general", _write(
        d / "s.jsonl", _score_row_with('{"max_search": 1e999}'))]),
    ("score: an option that is NaN", lambda d: ["score", "--preset", "mmsearch_r1", _write(
        d / "s.jsonl", _score_row_with('{"search_penalty": NaN}'))]),
    ("score: an option that is a list", lambda d: ["score", "--preset", "mmsearch_r1", _write(
        d / "s.jsonl", _score_row_with('{"search_penalty": [0.1]}'))]),
    ("score: an option of the wrong kind", lambda d: ["score", "--preset", "mmsearch_r1", _write(
        d / "s.jsonl", _score_row_with('{"search_penalty": "a lot"}'))]),
    ("score: a file that is not UTF-8", lambda d: ["score", "--preset", "exact_match",
                                                  _write_bytes(d / "s.jsonl", b'{"turns": ["\xff"]}\n')]),
    ("score: --out is the input", lambda d: ["score", "--preset", "exact_match", _write(d / "s.jsonl", GOOD_SCORE_ROW),
                                            "--out", str(d / "s.jsonl")]),
    ("tool: an unknown --arg", lambda d: ["tool", "lookup", "--arg", "querry=x"]),
    ("tool: an image that is not one", lambda d: ["tool", "image_search", "--config", "configs/eval_mini.yaml",
                                                 "--arg", f"image={_write(d / 'x.png', 'text')}"]),
    ("tool: an empty query", lambda d: ["tool", "text_search", "--arg", "query=  "]),
    ("import-cache: not a dict", lambda d: ["import-cache", _pickle(d / "c.pkl", [1, 2]), "--out", str(d / "c"),
                                            "--trust-pickle"]),
    ("import-cache: a pickle of a class that is gone", lambda d: [
        "import-cache", _write_bytes(d / "c.pkl", b"cno_such_module\nThing\n."), "--out", str(d / "c"),
        "--trust-pickle"]),
    ("import-cache: untrusted", lambda d: ["import-cache", _pickle(d / "c.pkl", {}), "--out", str(d / "c")]),
    ("import-cache: --out is a file", lambda d: ["import-cache", _pickle(d / "c.pkl", {"a": {"title_list": []}}),
                                                 "--out", _write(d / "f", ""), "--trust-pickle"]),
    ("import-cache: an unrecognised entry", lambda d: ["import-cache", _pickle(d / "c.pkl", {"a": 5}), "--out",
                                                       str(d / "c"), "--trust-pickle"]),
    ("check-data: a missing config", lambda d: ["check-data", str(d / "no.yaml")]),
    ("check-data: a bad row deep in the file", lambda d: ["check-data", "configs/demo.yaml",
                                                          "data.source=" + _deep_bad_parquet(d)]),
    ("check-data: a corrupt data file", lambda d: ["check-data", "configs/demo.yaml",
                                                   "data.source=" + _write(d / "d.parquet", "PAR1 garbage")]),
    ("check-data: no usable row", lambda d: ["check-data", "configs/demo.yaml", "data.on_bad_row=skip",
                                             "data.source=" + _write(d / "d.jsonl", "[]\n")]),
    ("build-models: an unknown model", lambda d: ["build-models", "tiny-huge"]),
    ("make-example: no rows", lambda d: ["make-example", "--rows", "0"]),
    ("no subcommand", lambda d: []),
    ("an unknown subcommand", lambda d: ["fly"]),
    ("an unknown option", lambda d: ["score", "--preset", "exact_match", "--fast", "x.jsonl"]),
]


@pytest.mark.parametrize("argv", [b for _, b in BAD_INPUTS], ids=[w for w, _ in BAD_INPUTS])
def test_a_user_error_is_one_line_on_stderr_and_exit_2(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(argv(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert err.startswith("agentrl: ") and err.count("\n") == 1, err
    assert out == ""


def test_the_message_names_what_is_wrong(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["train", "configs/demo.yaml", "trainer.max_stalenes=1"])
    assert "'trainer.max_stalenes'" in capsys.readouterr().err
    main(["score", "--preset", "exact_match", str(tmp_path / "no.jsonl")])
    assert f"'{tmp_path / 'no.jsonl'}'" in capsys.readouterr().err
    main(["bench", "sync"])
    assert capsys.readouterr().err.startswith("agentrl: bench: argument NAME: invalid choice: 'sync'")
    scores = _write(tmp_path / "s.jsonl", GOOD_SCORE_ROW + _score_row_with('{"search_penalty": null}'))
    main(["score", "--preset", "mmsearch_r1", scores])
    assert capsys.readouterr().err == (f"agentrl: {scores} row 1: field 'options.search_penalty': expected a number, "
                                       "string or boolean, got null\n")


def test_a_json_number_past_pythons_digit_limit_is_bad_input_not_a_crash(tmp_path, capsys, monkeypatch):
    from agentrl.envs.retriever import BadRequest, RequestLimits, parse_request

    monkeypatch.chdir(ROOT)
    row = _write(tmp_path / "d.jsonl", '{"prompt": ' + LONG_NUMBER + "}\n")
    assert main(["check-data", "configs/demo.yaml", f"data.source={row}"]) == 2
    assert capsys.readouterr().err == f"agentrl: {row} row 0: not valid JSON (a number with too many digits)\n"
    candidates = json.dumps({"prompt": [{"role": "user", "content": "Q?"}],
                             "reward_model": {"ground_truth": "a", "candidate_answers": f"[{LONG_NUMBER}]"}})
    row = _write(tmp_path / "c.jsonl", candidates + "\n")
    assert main(["check-data", "configs/demo.yaml", f"data.source={row}"]) == 2
    assert capsys.readouterr().err == (f"agentrl: {row} row 0: field 'reward_model.candidate_answers': "
                                       "not JSON (a number with too many digits)\n")
    corpus = _write(tmp_path / "corpus.jsonl", '{"id": ' + LONG_NUMBER + ', "contents": "x"}\n')
    assert main(["serve-retriever", "--corpus", corpus]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"agentrl: corpus {corpus} line ") and ": not JSON" in err and err.count("\n") == 1
    with pytest.raises(BadRequest, match="the body is not JSON"):  # the server answers 400, not 500
        parse_request(b'{"queries": ["q"], "topk": ' + LONG_NUMBER.encode() + b"}", RequestLimits())


def test_an_actor_failure_exits_1(capsys, monkeypatch):
    def crashed(cfg):
        raise ActorFailure("actor 'learner' died. Traceback (remote):\nRuntimeError: boom")

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("agentrl.training.orchestrator.train", crashed)
    assert main(["train", "configs/demo.yaml"]) == 1
    assert capsys.readouterr().err.startswith("agentrl: actor 'learner' died.")


def test_a_user_error_met_during_a_run_is_one_line_and_exit_2(capsys, monkeypatch):
    """Not only a bad data row: any user error the run meets (an unusable cache, a bad setting an actor found)."""
    from agentrl.training import orchestrator
    from agentrl.web.cache import CacheError

    async def unusable_cache(self):
        raise CacheError("runs/cache.sqlite: not a tool cache")

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(orchestrator, "connect_ray", lambda: False)  # no Ray: the run fails before any actor
    monkeypatch.setattr(orchestrator.Orchestrator, "run", unusable_cache)
    assert main(["train", "configs/demo.yaml"]) == 2
    assert capsys.readouterr().err == "agentrl: runs/cache.sqlite: not a tool cache\n"


class RayStarting(Exception):
    """Raised where a command would connect to Ray; carries the log level recorded by then."""


@pytest.fixture
def level_at_ray_start(monkeypatch, example_data):
    """A function: the log level a command (train, eval or bench) records before it starts Ray, with
    AGENTRL_LOG_LEVEL set to `env` (None: unset) and these config overrides."""
    import logging

    from agentrl.actors import factory
    from agentrl.training import orchestrator

    def connect_ray(*args, **kwargs):
        raise RayStarting(os.environ.get(LOG_LEVEL_ENV), logging.getLogger("vllm").level)

    monkeypatch.setattr(factory, "connect_ray", connect_ray)
    monkeypatch.setattr(orchestrator, "connect_ray", connect_ray)
    monkeypatch.chdir(ROOT)
    commands = {"train": ["train", "configs/demo.yaml"],
                "eval": ["eval", "configs/eval_mini.yaml", "--data", str(example_data)],
                "bench": ["bench", "async"]}

    def level(command: str, env: str | None, *overrides: str) -> str:
        if env is None:
            monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
        else:
            monkeypatch.setenv(LOG_LEVEL_ENV, env)
        with pytest.raises(RayStarting) as started:
            main([*commands[command], *overrides])
        recorded, vllm_logger = started.value.args
        assert vllm_logger == (logging.NOTSET if recorded == "debug" else logging.ERROR)
        return recorded

    return level


@pytest.mark.parametrize("command", ["train", "eval", "bench"])
def test_agentrl_log_level_wins_over_the_configs_level(command, level_at_ray_start):
    assert level_at_ray_start(command, None) == "info"
    assert level_at_ray_start(command, None, "trainer.log_level=debug") == "debug"
    assert level_at_ray_start(command, "debug") == "debug"
    assert level_at_ray_start(command, "info", "trainer.log_level=debug") == "info"
    assert level_at_ray_start(command, "DEBUG") == "debug"


def test_an_agentrl_log_level_that_is_no_level_is_a_user_error(capsys, monkeypatch):
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    assert main(["check-data", "configs/demo.yaml"]) == 2
    assert capsys.readouterr().err == "agentrl: AGENTRL_LOG_LEVEL: 'loud' is not one of info, debug\n"


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    r = subprocess.run([*agentrl_cmd(), "score", "--preset", "exact_match", str(tmp_path / "no.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("agentrl: score: ")


def test_user_error_messages_name_the_file_and_the_row_counted_as_in_data_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    deep = _deep_bad_parquet(tmp_path)
    assert main(["check-data", "configs/demo.yaml", f"data.source={deep}"]) == 2
    assert capsys.readouterr().err == f"agentrl: {deep} row 517: field 'reward_model.ground_truth': empty\n"
    scores = _write(tmp_path / "s.jsonl", GOOD_SCORE_ROW + "\n" + '{"turns": 3, "ground_truth": "x"}\n')
    assert main(["score", "--preset", "exact_match", scores]) == 2  # rows from 0; a blank line is not a row
    assert capsys.readouterr().err.startswith(f"agentrl: {scores} row 1: field 'turns': expected a list of strings")


def test_check_data_reports_every_configured_file_and_what_was_skipped(tmp_path, capsys, monkeypatch, example_data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(ROOT)
    assert main(["check-data", "configs/demo.yaml", f"data.source={example_data}"]) == 0
    assert capsys.readouterr().out == f"[agentrl] {example_data}: 5 rows OK, 0 skipped\n"
    eval_rows = tmp_path / "eval.parquet"
    pq.write_table(pa.Table.from_pylist(_data_rows(3)), eval_rows)
    argv = ["check-data", "configs/demo.yaml", "data.on_bad_row=skip", f"trainer.eval_data={eval_rows}",
            "data.source=" + _deep_bad_parquet(tmp_path)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"[agentrl] {tmp_path / 'deep.parquet'}: 599 rows OK, 1 skipped (reward_model.ground_truth: 1)",
        f"[agentrl] {eval_rows}: 3 rows OK, 0 skipped"]
    assert main(["check-data", "configs/demo.yaml"]) == 0
    assert "no file to check" in capsys.readouterr().out


def test_check_data_starts_no_ray(tmp_path):
    code = ("import sys; from agentrl.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'ray imported'; sys.exit(rc)")
    bad = _deep_bad_parquet(tmp_path)
    r = subprocess.run([sys.executable, "-c", code, "check-data", "configs/demo.yaml", f"data.source={bad}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "row 517" in r.stderr, r.stderr


def test_a_bad_row_deep_in_the_file_stops_a_run_with_one_line(tmp_path, capsys, monkeypatch):
    """The first row is fine (the pre-flight check passes); the feeder meets row 517 mid-run."""
    from agentrl.data.prompts import PromptStream

    def feeding(cfg):
        for _ in PromptStream(cfg.data.source, shuffle=False, on_bad_row=cfg.data.on_bad_row):
            pass

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("agentrl.training.orchestrator.train", feeding)
    bad = _deep_bad_parquet(tmp_path)
    assert main(["train", "configs/demo.yaml", f"data.source={bad}"]) == 2
    assert capsys.readouterr().err == f"agentrl: {bad} row 517: field 'reward_model.ground_truth': empty\n"


def test_score_writes_every_row_and_tool_runs_with_good_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    scores = _write(tmp_path / "s.jsonl", GOOD_SCORE_ROW + "\n" + GOOD_SCORE_ROW)
    assert main(["score", "--preset", "exact_match", scores, "--out", str(tmp_path / "out.jsonl")]) == 0
    assert [json.loads(line)["score"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1.0, 1.0]
    assert main(["tool", "text_search", "--arg", "query=eiffel tower"]) == 0
    assert "Eiffel Tower" in capsys.readouterr().out
