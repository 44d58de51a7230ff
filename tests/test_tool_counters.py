"""The fallbacks and failures a tool absorbs are visible: an environment actor reports its tools' counters
and its tool cache's in its stats; every metrics row of a run carries their totals as `tool/*`
(tests/test_train_runs.py, the veRL-parquet run)."""

from __future__ import annotations

from agentrl.actors.environment import EnvironmentActor
from agentrl.config import load_config
from agentrl.envs.agent_loop import call_tool
from agentrl.envs.tool import TrajectoryState
from tests.fake_apis import SECRET, LoopRunner, serp

LOOP = LoopRunner()
run = LOOP.run


def test_an_environment_actor_reports_its_tools_and_cache_counters(apis, tiny_text_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", SECRET)
    apis.organic = [{"title": "Loopback", "link": f"{apis.url}/page.html", "snippet": "kept snippet"}]
    cfg = load_config("configs/demo_vl.yaml", [
        *serp(apis), "tools.text_search.reader=direct",  # a loopback page is refused: the hit keeps its snippet
        f"tools.cache.path={tmp_path / 'tools.sqlite'}", "env.tools=[text_search, image_search]"])
    actor = EnvironmentActor(cfg, tiny_text_path, generators=None, rewards=None, queue=None)
    text_search = LOOP.open(actor.ctx.tools["text_search"])
    LOOP.open(actor.ctx.tools["image_search"])
    for _ in range(2):  # a miss, then a hit
        obs, call = run(call_tool(text_search, "q", TrajectoryState("q"), 10, actor.ctx.cache))
        assert call.ok and obs.text.endswith("): kept snippet")
    assert actor.stats().tool_counters == {
        "text_search/snippet_fallbacks": 1, "text_search/snippet_fallbacks.UnsafeURL": 1,
        "text_search/pages_cut": 0, "image_search/thumbnails_dropped": 0,
        "cache/hits": 1, "cache/misses": 1, "cache/corrupt": 0, "cache/put_errors": 0}
