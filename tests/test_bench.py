"""`agentrl bench async`: the latency model, the interval arithmetic behind busy fractions, the
per-step time profile, and one short real run of the benchmark."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess

import pytest

from agentrl.bench.report import RunTrace, busy_fraction, max_concurrency, mean_concurrency, summarize, union_length
from agentrl.envs.latency_tool import LatencyModel, LatencyTool, lognormal_params
from agentrl.records import GenerationResult, ToolCall, Trajectory
from agentrl.timing import TrajectoryTimer, step_profile
from tests.conftest import ROOT, agentrl_cmd


def test_tool_latency_is_log_normal_with_the_given_median_and_p99():
    model = LatencyModel(median_s=1.0, p99_s=10.0, seed=3)
    draws = sorted(model.draw()[0] for _ in range(40_000))
    assert statistics.median(draws) == pytest.approx(1.0, rel=0.05)
    assert draws[int(0.99 * len(draws))] == pytest.approx(10.0, rel=0.12)


def test_lognormal_parameters_and_their_errors():
    mu, sigma = lognormal_params(2.0, 2.0)
    assert mu == pytest.approx(math.log(2.0)) and sigma == 0.0  # a fixed latency
    assert lognormal_params(0.0, 0.0)[0] == -math.inf
    with pytest.raises(ValueError, match="below its median"):
        lognormal_params(2.0, 1.0)
    with pytest.raises(ValueError, match="failure_rate"):
        LatencyModel(failure_rate=1.5)


def test_a_zero_median_tool_answers_at_once_and_the_failure_rate_is_honoured():
    assert all(LatencyModel(0.0, 0.0, seed=1).draw()[0] == 0.0 for _ in range(100))
    model = LatencyModel(0.0, 0.0, failure_rate=0.3, seed=2)
    fails = sum(model.draw()[1] for _ in range(10_000))
    assert fails / 10_000 == pytest.approx(0.3, abs=0.02)


def test_the_latency_tool_answers_from_the_fact_table_with_a_page_of_filler():
    from agentrl.data.synthetic import lookup_table
    from agentrl.envs.tool import TrajectoryState

    name, colour = next(iter(lookup_table(0).items()))
    tool = LatencyTool(median_s=0.0, p99_s=0.0, filler_words=5)
    obs = asyncio.run(tool.run({"query": name}, TrajectoryState(question="")))
    assert obs.ok and obs.text.startswith(f"{name}: {colour} ") and len(obs.text.split()) == 2 + 5
    failing = LatencyTool(median_s=0.0, p99_s=0.0, failure_rate=1.0)
    with pytest.raises(RuntimeError, match="injected"):
        asyncio.run(failing.run({"query": name}, TrajectoryState(question="")))


def test_the_async_bench_page_stays_about_250_tokens(tiny_text_path):
    """The bench's workload is sized in tokens (docs/benchmarks.md): a page of about 250, a sequence of about
    650. A tokenizer change once doubled the page (each colour became two tokens) and the learner's step."""
    from transformers import AutoTokenizer

    from agentrl.config import load_config
    from agentrl.envs.tool import TrajectoryState

    cfg = load_config("configs/bench_async.yaml", [])
    tool = LatencyTool.from_config(cfg)
    tool.model = LatencyModel(0.0, 0.0, 0.0)
    obs = asyncio.run(tool.run({"query": "kasazo"}, TrajectoryState(question="")))
    tokens = len(AutoTokenizer.from_pretrained(tiny_text_path).encode(obs.text, add_special_tokens=False))
    assert 220 <= tokens <= 280, tokens


def test_busy_fraction_counts_overlapping_intervals_once_and_clips_to_the_window():
    intervals = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (9.0, 12.0)]
    assert union_length(intervals, 0.0, 10.0) == pytest.approx(3.0 + 1.0 + 1.0)
    assert busy_fraction(intervals, 0.0, 10.0) == pytest.approx(0.5)
    assert busy_fraction([], 0.0, 10.0) == 0.0
    assert busy_fraction([(0.0, 10.0)], 2.0, 4.0) == 1.0


def test_concurrency_is_the_overlap_count_and_its_time_average():
    intervals = [(0.0, 4.0), (1.0, 3.0), (2.0, 5.0), (5.0, 6.0)]
    assert max_concurrency(intervals) == 3
    assert max_concurrency([(0.0, 1.0), (1.0, 2.0)]) == 1  # back to back is not overlap
    assert mean_concurrency(intervals, 0.0, 6.0) == pytest.approx((4 + 2 + 3 + 1) / 6)


def test_summary_measures_the_steady_state_window_after_the_warm_up_step():
    # three steps of 10 s each: 2 s waiting for data, 7 s training, 1 s weight sync; 8 samples each
    marks = [(10.0 * k, 10.0 * k + 2, 10.0 * k + 9, 10.0 * (k + 1)) for k in range(3)]
    rows = [{"samples": 8, "staleness_mean": 0.5, "staleness_max": k, "groups_dropped_stale": 0,
             "tool_calls": 4, "tool_errors": 1, "tool_latency_p50": 1.0, "weight_sync_s": 1.0,
             "time/learner_s": 7.0} for k in range(3)]
    trace = RunTrace("async", rows, marks, spans=[("tool", 12.0, 22.0), ("tool", 12.0, 14.0)],
                     gen_busy=[(0.0, 0.0), (30.0, 15.0)])
    s = summarize(trace)
    assert (s["window_s"], s["samples"]) == (20.0, 16)  # steps 2 and 3
    assert s["samples_per_s"] == pytest.approx(s["samples"] / s["window_s"])
    assert s["learner_busy_frac"] == pytest.approx(0.7)
    assert s["learner_wait_frac"] == pytest.approx(0.2)
    assert s["generator_busy_frac"] == pytest.approx(0.5)
    assert s["staleness_max"] == 2 and s["tool_concurrency_max"] == 2
    assert s["tool_concurrency_mean"] == pytest.approx(12.0 / 20.0)


def test_a_trajectory_timer_records_turns_and_places_tool_calls_between_them():
    traj = Trajectory("t", "g", 0, [1, 2])

    async def generate(request):
        await asyncio.sleep(0.01)
        return GenerationResult([3], [0.0], [0], "stop", 0)

    timer = TrajectoryTimer(traj, generate)

    async def loop():
        await timer.generate(None)
        traj.tool_calls.append(ToolCall("latency", {}, 0.5, True))
        await timer.generate(None)
        timer.finish()

    asyncio.run(loop())
    kinds = [k for k, _, _ in traj.spans]
    assert kinds == ["generation", "tool", "generation"]
    (_, g1s, g1e), (_, ts, te), (_, g2s, _) = traj.spans
    assert te == g2s and te - ts == pytest.approx(0.5)
    assert traj.timings["generation_s"] == pytest.approx((g1e - g1s) + (traj.spans[2][2] - g2s))
    assert traj.timings["tool_s"] == pytest.approx(0.5)


def test_the_step_profile_splits_a_step_into_its_parts():
    a, b = Trajectory("a", "g", 0, [1]), Trajectory("b", "g", 0, [1])
    a.timings, b.timings = {"generation_s": 2.0, "reward_s": 0.1}, {"generation_s": 4.0, "reward_s": 0.3}
    a.tool_calls = [ToolCall("latency", {}, 1.0, True), ToolCall("latency", {}, 3.0, False)]
    p = step_profile([a, b], queue_wait_s=0.5, learner_s=3.0, weight_sync_s=0.2, step_s=4.0)
    assert p == pytest.approx({"time/generation_s": 3.0, "time/tools_s": 2.0, "time/reward_s": 0.2,
                               "time/queue_wait_s": 0.5, "time/learner_s": 3.0, "time/weight_sync_s": 0.2,
                               "time/other_s": 0.3})


@pytest.mark.slow
@pytest.mark.long
def test_a_short_bench_run_writes_consistent_results(tmp_path):
    """About three minutes: the real benchmark's phases (sync, async, async with `continue`, the learner
    alone, the environment actor at zero latency), each a run of its own, since a bench is only as good as
    the command that produces it."""
    out, png = tmp_path / "async.json", tmp_path / "timeline.png"
    r = subprocess.run([*agentrl_cmd(), "bench", "async", "--steps", "3", "--quick", "--latency-median", "0.3",
                        "--latency-p99", "1", "--out", str(out), "--timeline", str(png),
                        "trainer.batch_groups=2", "rollout.n=2", f"trainer.output_dir={tmp_path}/runs",
                        "tools.options.latency.filler_words=20"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    for mode in ("sync", "async", "async_continue"):
        m = res[mode]
        assert m["samples_per_s"] == pytest.approx(m["samples"] / m["window_s"])
        assert m["samples"] == (m["steps"] - 1) * 2 * 2  # whole groups, warm-up step excluded
        assert 0.0 < m["learner_busy_frac"] <= 1.0 and 0.0 <= m["generator_busy_frac"] <= 1.0
    assert res["sync"]["staleness_max"] == 0
    assert res["async"]["staleness_max"] <= 2  # the default bound of the async run
    assert res["speedup"] == pytest.approx(res["async"]["samples_per_s"] / res["sync"]["samples_per_s"])
    assert res["learner_alone"]["samples_per_s"] > 0
    assert res["async"]["learner_alone_frac"] == pytest.approx(
        res["async"]["samples_per_s"] / res["learner_alone"]["samples_per_s"])
    assert set(res["staleness_by_on_weight_update"]) == {"pause_resume", "continue"}
    assert res["env_actor"]["zero_latency"]["tool_calls_per_s"] > 0
    assert png.stat().st_size > 10_000
    assert "speedup" in r.stdout


def test_the_sweep_table_has_one_row_per_point_and_dashes_where_sync_was_not_run():
    from agentrl.bench.report import sweep_table

    mode = {"samples_per_s": 2.0, "learner_busy_frac": 0.95, "staleness_mean": 1.5, "staleness_max": 2,
            "tool_concurrency_mean": 12.0, "groups_dropped_stale": 3}
    table = sweep_table([{"setting": "tool median 4 s", "sync": {**mode, "samples_per_s": 0.5}, "async": mode,
                          "speedup": 4.0},
                         {"setting": "max staleness 0", "async": mode}]).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| tool median 4 s | 0.50 | 2.00 | 4.00× | 95% | 1.50 / 2 | 12.0 | 3 |")
    assert table[3].startswith("| max staleness 0 | – | 2.00 | – | 95% |")


@pytest.mark.slow
def test_the_weight_push_bench_writes_its_table_through_the_cli(tmp_path):
    out = tmp_path / "weights.json"
    r = subprocess.run([*agentrl_cmd(), "bench", "weights", "--sizes", "tiny", "--pushes", "2", "--transports",
                        "object_store,collective", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["transport"] for row in result["sizes"]] == ["object_store", "collective"]
    for row in result["sizes"]:
        assert row["size"] == "tiny" and row["parameters"] > 500_000 and row["bytes"] == 2 * row["parameters"]  # bf16
        assert len(row["push_s_all"]) == 2 and 0 < row["engine_s"] <= row["push_s"]
        assert row["push_gb_per_s"] == pytest.approx(row["bytes"] / row["push_s"] / 1e9)
        assert row["memcpy_gb_per_s"] > row["push_gb_per_s"]
        assert row["push_share_of_memcpy"] == pytest.approx(row["memcpy_s"] / row["push_s"])
        assert row["peak_extra_bytes"] >= 0
        assert row["kept_model_copies"] == pytest.approx(row["kept_bytes"] / row["bytes"])
    assert result["projection"]["scaled_from"] == "tiny" and result["projection"]["8_engines_worst_s"] > 0


def test_the_push_projection_scales_by_bytes_and_engines():
    from agentrl.bench.weights import project

    largest = {"size": "500m", "bytes": 1e9, "snapshot_and_transfer_s": 2.0, "engine_s": 1.0}
    p = project(largest, params=5e9, engines=8)  # 10 GB in bf16: 10x the bytes
    assert p["one_engine_s"] == pytest.approx(30.0)
    assert p["8_engines_best_s"] == pytest.approx(30.0) and p["8_engines_worst_s"] == pytest.approx(20 + 80)


# ---- the search workload (`--workload search`) ------------------------------------------------------
def test_the_simulated_web_draws_the_same_latencies_again_after_a_reset():
    from agentrl.bench.search_web import DEFAULT_LATENCY, SearchWeb

    web = SearchWeb(seed=3, failure_rate=0.02)
    first = {stage: [web.draw(stage) for _ in range(2000)] for stage in DEFAULT_LATENCY}
    web.reset()
    assert {stage: [web.draw(stage) for _ in range(2000)] for stage in DEFAULT_LATENCY} == first
    for stage, spec in DEFAULT_LATENCY.items():
        delays = sorted(d for d, _ in first[stage])
        assert delays[1000] == pytest.approx(spec.median_s, rel=0.15)
        assert delays[1980] == pytest.approx(spec.p99_s, rel=0.4)
        assert 0.005 < sum(f for _, f in first[stage]) / 2000 < 0.04


def test_the_search_tools_read_the_simulated_web_through_their_real_backends(monkeypatch):
    """SerpAPI-shaped search, direct page fetches and the reader; Lens-shaped image search and thumbnails."""
    from agentrl.bench.search_web import SearchWeb, StageLatency
    from agentrl.config import load_config
    from agentrl.envs.registry import load_tool
    from agentrl.envs.tool import TrajectoryState

    monkeypatch.setenv("SERPAPI_API_KEY", "bench-local-key")
    fast = {stage: StageLatency(0.01, 0.05) for stage in ("search", "page", "thumbnail")}
    with SearchWeb(failure_rate=0.0, latency=fast) as web:
        cfg = load_config("configs/bench_async_search.yaml", [
            "data.source=synthetic_vl", f"tools.image_search.base_url={web.url}/search",
            f"tools.text_search.base_url={web.url}/search", "tools.text_search.summariser=none",
            "tools.text_search.max_page_chars=400"])  # three pages within the output budget

        async def calls():
            text, image = load_tool("text_search", cfg), load_tool("image_search", cfg)
            state = TrajectoryState("q", image_urls=[f"{web.url}/photo/1.jpg"])
            try:
                return await text.run({"query": "kasazo colour"}, state), await image.run({}, state), text, image
            finally:
                await text.close()
                await image.close()

        text_obs, image_obs, text, image = asyncio.run(calls())
    lines = text_obs.text.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{i}. kasazo colour - ") for i, line in enumerate(lines, 1))
    assert "<p>" not in text_obs.text and text.stats["snippet_fallbacks"] == 0  # the reader's text, not the HTML
    assert len(image_obs.images) == 5 and image.stats["thumbnails_dropped"] == 0
    assert {s: len(v) for s, v in text.stage_clock.snapshot().items()} == {"search": 1, "fetch": 3, "reader": 3}
    assert {s: len(v) for s, v in image.stage_clock.snapshot().items()} == {
        "search": 1, "thumbnail": 5, "thumbnail_check": 1}
    assert web.counters == {"search/requests": 2, "page/requests": 3, "thumbnail/requests": 5}


@pytest.mark.slow
@pytest.mark.long
def test_a_quick_search_bench_run_exercises_every_stage_and_loses_no_group(tmp_path):
    """About two minutes: a `vllm serve` summariser, then two real runs (sync, async) of MMSearch-R1
    trajectories through the real search tools against the simulated web; the bench is only as good as
    the command that produces it."""
    from agentrl.bench.search_workload import STAGES

    out, png = tmp_path / "async_search.json", tmp_path / "timeline.png"
    r = subprocess.run([*agentrl_cmd(), "bench", "async", "--workload", "search", "--quick", "--steps", "2",
                        "--latency-scale", "0.3", "--skip", "continue,learner_alone", "--out", str(out),
                        "--timeline", str(png), "trainer.batch_groups=2", "rollout.n=2",
                        f"trainer.output_dir={tmp_path}/runs"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    assert res["setup"]["workload"] == "search" and set(res["setup"]["latency_by_stage"]) == {
        "search", "page", "thumbnail"}
    for mode in ("sync", "async"):
        m, search = res[mode], res[mode]["search"]
        assert m["lost_groups"] == 0 and m["groups"]["groups_trained"] == 2 * 2  # whole groups, both steps
        assert all(search["tool_latency_by_stage"][stage]["count"] > 0 for stage in STAGES), search
        assert all(search["web_requests"][f"{s}/requests"] > 0 for s in ("search", "page", "thumbnail"))
        assert search["cpu_s_per_trajectory"]["env_actors"] > 0 and search["cpu_s_per_trajectory"][
            "summariser_server"] > 0
        assert search["cache"] == "off"
    assert png.stat().st_size > 10_000
