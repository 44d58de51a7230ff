"""The search tools against a local server that speaks each real API's JSON shape; resilience with
injected faults; SSRF refusals; the cache; secrets kept out of every output."""

from __future__ import annotations

import pytest

from agentrl.config import BackendConfig, FetchConfig
from agentrl.envs.agent_loop import call_tool
from agentrl.envs.tool import TrajectoryState
from agentrl.web.cache import ToolCache
from agentrl.web.http import Backend, BackendError, Oversize
from agentrl.web.safe_fetch import PublicOnlyResolver, SafeFetcher, UnsafeURL, check_url
from tests.fake_apis import SECRET, LoopRunner, lens, png_bytes, serp

LOOP = LoopRunner()  # one loop for the module, so sessions can be closed on it at the end
run, opened = LOOP.run, LOOP.open


@pytest.fixture
def keys(monkeypatch):
    for k in ("SERPAPI_API_KEY", "JINA_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(k, SECRET)


tool = LOOP.tool


def test_serpapi_text_search_reads_organic_results(apis, keys):
    t = tool("text_search", *serp(apis))
    obs = run(t.run(t.parse_args("eiffel tower height"), TrajectoryState("q")))
    assert obs.text.startswith("1. Eiffel Tower - Wikipedia (")
    assert "2. Tower facts (https://example.org/facts): It is 330 m tall." in obs.text
    sent = apis.requests[-1]
    assert sent["engine"] == "google" and sent["q"] == "eiffel tower height" and sent["api_key"] == SECRET
    assert SECRET not in obs.text


def test_serpapi_lens_returns_thumbnails_and_titles(apis, keys):
    t = tool("image_search", *lens(apis))
    state = TrajectoryState("q", images=[png_bytes()], image_urls=["https://example.com/query.jpg"])
    obs = run(t.run({}, state))
    assert len(obs.images) == 5  # top k = 5 of the 6 visual matches
    assert obs.text.count("<image>") == 5 and "title: Match 5" in obs.text and "Match 6" not in obs.text
    assert apis.requests[-1]["engine"] == "google_lens" and apis.requests[-1]["url"] == state.image_urls[0]


def test_searxng_backend(apis):
    t = tool("text_search", "tools.text_search.backend=searxng", f"tools.text_search.base_url={apis.url}/searxng")
    obs = run(t.run({"query": "anything"}, TrajectoryState("q")))
    assert obs.text == "1. SearX result (https://example.net/a): Snippet from searx."


def test_jina_reader_then_openai_summariser(apis, keys):
    t = tool("text_search", *serp(apis),
             "tools.text_search.reader=jina", f"tools.text_search.reader_url={apis.url}/jina/",
             "tools.text_search.summariser=openai", f"tools.text_search.summariser_url={apis.url}/v1",
             "tools.text_search.summariser_model=judge")
    before = apis.hits["chat"]
    obs = run(t.run({"query": "how tall"}, TrajectoryState("q")))
    assert obs.text.splitlines()[0].endswith(": SUMMARY: 330 m tall, Paris.")
    assert apis.hits["chat"] - before == 2
    assert any(r.get("auth") == f"Bearer {SECRET}" for r in apis.requests)


def test_direct_reader_extracts_page_text(apis, keys):
    t = tool("text_search", *serp(apis),
             "tools.text_search.reader=direct", "tools.fetch.allow_hosts=[127.0.0.1]", "tools.text_search.top_k=1")
    obs = run(t.run({"query": "x"}, TrajectoryState("q")))
    assert "wrought-iron lattice tower in Paris" in obs.text


def test_retries_recover_from_503s(apis):
    b = opened(Backend("flaky", BackendConfig(retries=3, backoff_s=0.01)))
    apis.flaky_left = 2
    data = run(b.request("GET", f"{apis.url}/flaky/search"))
    assert data["organic_results"][0]["snippet"] == "recovered" and b.calls == 3


def test_timeouts_are_retried_then_fail_cleanly(apis):
    b = opened(Backend("slow", BackendConfig(retries=1, backoff_s=0.01, timeout_s=0.2)))
    with pytest.raises(BackendError, match="failed after 2 attempts \\(timeout\\)"):
        run(b.request("GET", f"{apis.url}/slow/search"))


def test_circuit_breaker_opens_and_then_fails_fast(apis):
    b = opened(Backend("fail", BackendConfig(retries=0, breaker_failures=2, breaker_reset_s=60)))
    for _ in range(2):
        with pytest.raises(BackendError):
            run(b.request("GET", f"{apis.url}/fail/search"))
    hits = apis.hits["fail"]
    with pytest.raises(BackendError, match="circuit open"):
        run(b.request("GET", f"{apis.url}/fail/search"))
    assert apis.hits["fail"] == hits  # no request sent while open


def test_a_failing_backend_becomes_an_error_observation(apis, keys):
    t = tool("text_search", "tools.text_search.backend=serpapi", f"tools.text_search.base_url={apis.url}/fail/search",
             "tools.text_search.http.retries=1", "tools.text_search.http.backoff_s=0.01")
    obs, call = run(call_tool(t, "q", TrajectoryState("q"), timeout_s=10))
    assert not obs.ok and not call.ok and "HTTP 500" in call.error
    assert SECRET not in obs.text + str(call)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost:8080/x", "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/", "http://192.168.0.1/", "http://[::1]/", "http://[fc00::1]/", "http://[fe80::1]/",
    "file:///etc/passwd", "ftp://example.com/", "http://0.0.0.0/",
])
def test_ssrf_refuses_non_public_targets(url):
    with pytest.raises(UnsafeURL):
        run(check_url(url, FetchConfig()))


def test_ssrf_refusal_also_after_a_redirect(apis):
    fetcher = SafeFetcher(BackendConfig(retries=0), FetchConfig(allow_hosts=["127.0.0.1"]))
    opened(fetcher.backend)
    with pytest.raises(UnsafeURL, match="169.254.169.254"):
        run(fetcher.fetch_page(f"{apis.url}/redirect"))


def test_resolver_drops_names_that_resolve_to_private_addresses():
    async def resolve():
        return await PublicOnlyResolver([]).resolve("localhost", 80)

    with pytest.raises(UnsafeURL):
        run(resolve())


def test_cache_hits_on_repeat_and_replay_only_makes_no_network_call(apis, keys, tmp_path):
    t = tool("text_search", *serp(apis))
    cache = ToolCache(str(tmp_path / "tools.sqlite"))
    first, c1 = run(call_tool(t, "Eiffel  Tower", TrajectoryState("q"), 10, cache, "on"))
    hits = apis.hits["serpapi"]
    again, c2 = run(call_tool(t, "eiffel tower", TrajectoryState("q"), 10, cache, "on"))  # normalised key
    assert not c1.cached and c2.cached and again.text == first.text and apis.hits["serpapi"] == hits
    assert (cache.hits, cache.misses) == (1, 1)
    replay, c3 = run(call_tool(t, "never asked", TrajectoryState("q"), 10, cache, "replay_only"))
    assert not c3.ok and "replay_only" in c3.error and apis.hits["serpapi"] == hits
    cached, c4 = run(call_tool(t, "eiffel tower", TrajectoryState("q"), 10, cache, "replay_only"))
    assert c4.cached and cached.text == first.text
    assert SECRET.encode() not in (tmp_path / "tools.sqlite").read_bytes()


def test_local_backends_work_offline():
    from agentrl.data.synthetic import demo_image_index

    img = (demo_image_index() / "003.png").read_bytes()
    obs = run(tool("image_search").run({}, TrajectoryState("q", images=[img])))
    assert len(obs.images) == 5 and "title:" in obs.text
    obs = run(tool("text_search").run({"query": "kasazo colour"}, TrajectoryState("q")))
    assert obs.text.startswith("1. kasazo")


def bad_corpus_or_index(tmp_path, case: str) -> tuple[str, str]:
    """A config override pointing a local search tool at a broken file, and the error it must give."""
    corpus, folder = tmp_path / "corpus.jsonl", tmp_path / "images"
    folder.mkdir()
    if case == "missing corpus":
        return f"tools.text_search.corpus={corpus}", f"tools.text_search.corpus: corpus '{corpus}' is not a file"
    if case == "corpus not JSONL":
        corpus.write_text('{"id": 1, "contents": "fine"}\nnot json\n')
        return f"tools.text_search.corpus={corpus}", f"tools.text_search.corpus: corpus {corpus} line 2: not JSON"
    if case == "no image index":
        return (f"tools.image_search.local_dir={folder}",
                f"tools.image_search.local_dir: image index {folder / 'index.jsonl'}: cannot read it")
    (folder / "index.jsonl").write_text('{"title": "gone", "image": "gone.png"}\n')
    return (f"tools.image_search.local_dir={folder}",
            f"tools.image_search.local_dir: image index {folder / 'index.jsonl'} line 1: cannot read image "
            f"{folder / 'gone.png'}")


@pytest.mark.parametrize("case", ["missing corpus", "corpus not JSONL", "no image index", "missing image"])
def test_a_bad_corpus_or_image_index_fails_before_any_actor_starts_naming_the_key_and_file(tmp_path, case):
    from agentrl.actors.factory import check_plugins
    from agentrl.config import ConfigError, load_config

    override, message = bad_corpus_or_index(tmp_path, case)
    cfg = load_config("configs/demo_vl.yaml", ["tools.cache.mode='off'", override])
    with pytest.raises(ConfigError) as e:
        check_plugins(cfg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_image_search_without_an_image_is_an_error_observation():
    obs, call = run(call_tool(tool("image_search"), "", TrajectoryState("q"), 10))
    assert not obs.ok and "needs an input image" in call.error


def _write_entries(path: str, worker: int) -> None:
    from agentrl.envs.tool import Observation

    cache = ToolCache(path)
    for i in range(40):
        cache.put_sync(f"w{worker}-{i}", "t", Observation(f"result {worker} {i}", images=[b"\x89PNG"]))


def test_cache_is_safe_under_concurrent_writers_in_several_processes(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "shared.sqlite")
    ToolCache(path)  # create the schema once
    procs = [mp.get_context("spawn").Process(target=_write_entries, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ToolCache(path)
    got = [cache.get_sync(f"w{w}-{i}") for w in range(4) for i in range(40)]
    assert all(o is not None for o in got) and got[-1].text == "result 3 39" and got[-1].images == [b"\x89PNG"]


def test_import_cache_refuses_untrusted_pickles_and_converts_trusted_ones(tmp_path):
    import pickle

    from agentrl.cli import main

    src = tmp_path / "fvqa_cache.pkl"
    with open(src, "wb") as f:
        pickle.dump({"fvqa_train_1": {"title_list": ["A red square", "Another"], "image_list": [png_bytes(), None]}},
                    f)
    out = tmp_path / "cache"
    assert main(["import-cache", str(src), "--out", str(out)]) == 2  # no --trust-pickle: refused
    assert not out.exists()
    assert main(["import-cache", str(src), "--out", str(out), "--trust-pickle"]) == 0
    t = tool("image_search", "tools.image_search.backend=cache", f"tools.image_search.cache_dir={out}")
    obs = run(t.run({}, TrajectoryState("q", data_id="fvqa_train_1")))
    assert obs.text.endswith("1. image: <image>\ntitle: A red square\n2. title: Another")
    assert len(obs.images) == 1
    (tmp_path / "meta.json").write_text('{"title_list": ["outside the cache folder"]}')
    for hostile in ("..", "../cache/fvqa_train_1", "", "a\0b"):  # a data_id never reads outside cache_dir
        with pytest.raises(BackendError, match="no cached image search"):
            run(t.results(TrajectoryState("q", data_id=hostile)))


def test_dense_retrieval_with_the_packaged_minilm_model_runs_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = tool("text_search", "tools.text_search.retrieval=dense", "tools.text_search.top_k=1")
    obs = run(t.run({"query": "a famous iron landmark in France"}, TrajectoryState("q")))
    assert obs.text.startswith("1. Eiffel Tower (local://paris)")  # no shared words with BM25's best


def test_reader_refuses_wrong_content_types_and_oversized_pages(apis):
    plain_only = FetchConfig(allow_hosts=["127.0.0.1"], content_types=["text/plain"])
    fetcher = SafeFetcher(BackendConfig(retries=0), plain_only)
    opened(fetcher.backend)
    with pytest.raises(UnsafeURL, match="content type 'text/html'"):
        run(fetcher.fetch_page(f"{apis.url}/page.html"))
    small = SafeFetcher(BackendConfig(retries=0), FetchConfig(allow_hosts=["127.0.0.1"], max_bytes=50))
    opened(small.backend)
    with pytest.raises(Oversize, match="larger than 50 bytes"):
        run(small.fetch_page(f"{apis.url}/page.html"))
