"""The fallbacks and failures a tool absorbs are visible: an environment actor reports its tools' counters
and its tool cache's in its stats, and every metrics row of a run carries their totals as `tool/*`."""

from __future__ import annotations

import pytest

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


@pytest.mark.slow
def test_every_metrics_row_of_a_run_carries_the_tool_and_cache_counters(tmp_path):
    from tests.test_train_runs import metrics, train

    r = train(tmp_path, "trainer.total_steps=2", "trainer.run_name=counters",
              f"tools.cache.path={tmp_path / 'tools.sqlite'}")
    assert r.returncode == 0, r.stderr[-3000:]
    for row in metrics(tmp_path / "counters"):
        counters = {k: v for k, v in row.items() if k.startswith("tool/")}
        assert set(counters) >= {"tool/cache/hits", "tool/cache/misses", "tool/cache/corrupt", "tool/cache/put_errors"}
        assert all(isinstance(v, int) and v >= 0 for v in counters.values())
