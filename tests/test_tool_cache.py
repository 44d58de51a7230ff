"""The tool cache: its key holds everything that changes a result (so one corpus never answers for
another), a corrupt file fails with one line naming it, a read-only file is read for replay, and an
entry that does not decode, or a damaged page, is a counted miss; a symbolic link in its place is refused."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from agentrl.envs import text_search
from agentrl.envs.agent_loop import call_tool
from agentrl.envs.tool import Observation, TrajectoryState
from agentrl.web.cache import CacheError, ToolCache, cache_key, image_hash
from tests.fake_apis import LoopRunner, png_bytes

LOOP = LoopRunner()
run, tool = LOOP.run, LOOP.tool


@pytest.fixture(scope="module", autouse=True)
def _close_sessions():
    yield
    LOOP.close_all()


def corpus(path, colour: str) -> str:
    path.write_text(json.dumps({"id": "d1", "title": "Kasazo", "contents": f"kasazo is {colour}."}) + "\n")
    return str(path)


def key(t, state: TrajectoryState | None = None, query: str = "q") -> str:
    state = state or TrajectoryState("q")
    return cache_key(t.name, t.cache_identity(state), t.parse_args(query) if query else {})


def test_a_run_on_another_corpus_never_gets_this_corpus_answers(tmp_path):
    cache = ToolCache(str(tmp_path / "tools.sqlite"))
    red = tool("text_search", f"tools.text_search.corpus={corpus(tmp_path / 'a.jsonl', 'red')}")
    blue = tool("text_search", f"tools.text_search.corpus={corpus(tmp_path / 'b.jsonl', 'blue')}")
    first, c1 = run(call_tool(red, "kasazo", TrajectoryState("q"), 10, cache))
    other, c2 = run(call_tool(blue, "kasazo", TrajectoryState("q"), 10, cache))
    assert "red" in first.text and "blue" in other.text and not c2.cached
    corpus(tmp_path / "a.jsonl", "green")  # the same file, new content
    again = tool("text_search", f"tools.text_search.corpus={tmp_path / 'a.jsonl'}")
    changed, c3 = run(call_tool(again, "kasazo", TrajectoryState("q"), 10, cache))
    assert "green" in changed.text and not c3.cached


@pytest.mark.parametrize("override", [
    "tools.text_search.backend=searxng", "tools.text_search.top_k=2", "tools.text_search.retrieval=dense",
    "tools.text_search.max_output_chars=500", "tools.text_search.max_page_chars=100"])
def test_each_text_search_setting_that_changes_a_result_changes_the_key(override):
    assert key(tool("text_search")) != key(tool("text_search", override))


@pytest.mark.parametrize("override", [
    "tools.text_search.base_url=http://other:8888", "tools.text_search.reader=jina",
    "tools.text_search.reader=none", "tools.text_search.summariser_model=other",
    "tools.text_search.summariser_url=http://other/v1", "tools.fetch.max_bytes=1000"])
def test_each_web_setting_that_changes_a_result_changes_the_key(override):
    web = ["tools.text_search.backend=searxng", "tools.text_search.reader=direct",
           "tools.text_search.summariser=openai", "tools.text_search.summariser_url=http://s/v1",
           "tools.text_search.summariser_model=m"]
    assert key(tool("text_search", *web)) != key(tool("text_search", *web, override))


def test_the_summary_prompt_is_part_of_the_key(monkeypatch):
    t = tool("text_search", "tools.text_search.summariser=openai", "tools.text_search.summariser_model=m")
    before = key(t)
    monkeypatch.setattr(text_search, "SUMMARY_PROMPT", "Summarise: {query} {page}")
    assert key(t) != before


def test_the_same_settings_and_query_give_the_same_key():
    assert key(tool("text_search"), query="Kasazo  Colour") == key(tool("text_search"), query="kasazo colour")


def test_the_input_image_is_part_of_the_image_search_key():
    local = tool("image_search")
    red, green = (TrajectoryState("q", images=[png_bytes(c)]) for c in [(255, 0, 0), (0, 255, 0)])
    assert key(local, red, "") != key(local, green, "")
    lens = tool("image_search", "tools.image_search.backend=serpapi_lens")
    urls = [TrajectoryState("q", images=[png_bytes()], image_urls=[u]) for u in ["https://a/1.jpg", "https://a/2.jpg"]]
    assert key(lens, urls[0], "") != key(lens, urls[1], "")
    cached = tool("image_search", "tools.image_search.backend=cache", "tools.image_search.cache_dir=/tmp/x")
    rows = [TrajectoryState("q", images=[png_bytes()], data_id=d) for d in ["row1", "row2"]]
    assert key(cached, rows[0], "") != key(cached, rows[1], "")
    assert key(local, red, "") != key(tool("image_search", "tools.image_search.top_k=2"), red, "")


def test_a_corrupt_cache_file_fails_with_one_line_naming_it(tmp_path):
    path = tmp_path / "tools.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(CacheError) as err:
        ToolCache(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)  # a UserError: the command line prints it as one line


def test_a_read_only_cache_is_read_for_replay_and_never_written(tmp_path):
    path = tmp_path / "tools.sqlite"
    writer = ToolCache(str(path))
    t = tool("text_search")
    first, _ = run(call_tool(t, "kasazo", TrajectoryState("q"), 10, writer))
    writer.close()
    os.chmod(path, 0o444)
    before = path.read_bytes()
    reader = ToolCache(str(path), read_only=True)
    replay, call = run(call_tool(t, "kasazo", TrajectoryState("q"), 10, reader, "replay_only"))
    assert call.cached and replay.text == first.text
    missing, call = run(call_tool(t, "never asked", TrajectoryState("q"), 10, reader, "replay_only"))
    assert not call.ok and "replay_only" in call.error
    reader.put_sync("k", "t", Observation("x"))  # a no-op
    reader.close()
    assert path.read_bytes() == before


def test_a_read_only_cache_without_entries_is_all_misses(tmp_path):
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    reader = ToolCache(str(path), read_only=True)
    assert reader.get_sync("k") is None and reader.misses == 1


def test_a_corrupt_entry_is_a_miss_and_is_replaced(tmp_path):
    path = str(tmp_path / "tools.sqlite")
    cache = ToolCache(path)
    t = tool("text_search")
    first, _ = run(call_tool(t, "kasazo", TrajectoryState("q"), 10, cache))
    for bad in ["not json", json.dumps({"text": "t"}), json.dumps({"text": "t", "images": ["!!"]})]:
        db = sqlite3.connect(path)  # damaged from outside, as another process or a bad disk might
        db.execute("UPDATE results SET value = ?", (bad,))
        db.commit()
        db.close()
        again, call = run(call_tool(t, "kasazo", TrajectoryState("q"), 10, cache))
        assert not call.cached and again.text == first.text  # a miss: run again, and stored anew
    assert cache.corrupt == 3
    assert cache.counters() == {"hits": 0, "misses": 4, "corrupt": 3, "put_errors": 0}
    _, call = run(call_tool(t, "kasazo", TrajectoryState("q"), 10, cache))
    assert call.cached


def test_a_damaged_page_of_the_file_is_a_counted_miss_not_a_failed_call(tmp_path):
    path = str(tmp_path / "tools.sqlite")
    cache = ToolCache(path)
    keys = [f"k{i}" for i in range(300)]
    for k in keys:
        cache.put_sync(k, "t", Observation(k * 200))
    cache.close()  # the last connection: the WAL is folded into the file
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # every page after the schema's, overwritten as a bad disk might
        f.seek(2 * 4096)
        f.write(b"\xde\xad" * ((size - 2 * 4096) // 2))
    damaged = ToolCache(path)
    assert [damaged.get_sync(k) for k in keys[:5]] == [None] * 5
    assert damaged.corrupt == 5 and damaged.misses == 5


def test_a_symbolic_link_in_the_caches_place_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere.sqlite"
    ToolCache(str(elsewhere)).close()
    for planted in ("tools.sqlite", "tools.sqlite-wal"):
        folder = tmp_path / planted.replace(".", "_")
        folder.mkdir()
        (folder / planted).symlink_to(elsewhere)
        with pytest.raises(CacheError, match=f"{folder / planted}: a symbolic link"):
            ToolCache(str(folder / "tools.sqlite"))


def test_image_lists_that_join_to_the_same_bytes_have_different_hashes():
    assert image_hash([b"ab", b"c"]) != image_hash([b"a", b"bc"]) != image_hash([b"abc"])
    assert image_hash([b"ab", b"c"]) == image_hash([b"ab", b"c"]) and image_hash([]) == ""
