"""Injected faults and what absorbs them, as pure logic: tool errors, timeouts and hangs at their rates
become error observations the agent loop counts; the reliability settings are checked before anything
starts; a generator pool re-sends a turn whose engine died to another engine. (The same faults on the
real stack: tests/test_reliability.py.)"""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from agentrl.actors.generator import GeneratorPool
from agentrl.config import ConfigError, load_config
from agentrl.envs.agent_loop import call_tool
from agentrl.envs.faults import FaultInjectingTool, InjectedToolError, with_faults
from agentrl.envs.tool import Tool, TrajectoryState
from agentrl.records import GenerationRequest, GenerationResult, Observation, SamplingConfig


class Echo(Tool):
    name = "echo"

    async def run(self, args, state):
        return Observation(f"echo {args['query']}")


def faults(**rates: float):
    return load_config("configs/demo.yaml", [f"faults.{k}={v}" for k, v in rates.items()]).faults


def test_no_fault_rate_leaves_the_tool_itself():
    tool = Echo()
    assert with_faults(tool, faults(), seed=0) is tool


def test_each_kind_of_tool_fault_comes_at_its_rate_and_is_counted():
    tool = FaultInjectingTool(Echo(), error_rate=0.2, timeout_rate=0.1, hang_rate=0.0, seed=1)

    async def calls():
        return [await call_tool(tool, f"q{k}", TrajectoryState("q"), timeout_s=1.0) for k in range(2000)]

    results = asyncio.run(calls())
    errors = [c for _, c in results if c.error and "InjectedToolError" in c.error]
    timeouts = [c for _, c in results if c.error == "timeout"]
    assert len(errors) / 2000 == pytest.approx(0.2, abs=0.03)
    assert len(timeouts) / 2000 == pytest.approx(0.1, abs=0.03)
    assert tool.stats == {"injected_errors": len(errors), "injected_timeouts": len(timeouts), "injected_hangs": 0}
    ok = [obs for obs, c in results if c.ok]
    assert ok and all(obs.text.startswith("echo q") for obs in ok) and tool.name == "echo"


def test_a_hung_tool_call_is_ended_by_the_tool_timeout():
    tool = FaultInjectingTool(Echo(), error_rate=0.0, timeout_rate=0.0, hang_rate=1.0)
    obs, call = asyncio.run(call_tool(tool, "x", TrajectoryState("q"), timeout_s=0.05))
    assert not obs.ok and call.error == "timeout" and tool.stats["injected_hangs"] == 1


def test_an_injected_error_raises_the_injected_kind():
    tool = FaultInjectingTool(Echo(), error_rate=1.0, timeout_rate=0.0, hang_rate=0.0)
    with pytest.raises(InjectedToolError, match="faults.tool_error_rate"):
        asyncio.run(tool.run({"query": "x"}, TrajectoryState("q")))


@pytest.mark.parametrize("override,key", [
    (["faults.tool_error_rate=1.5"], "faults.tool_error_rate"),
    (["faults.tool_error_rate=0.6", "faults.tool_hang_rate=0.6"], "faults.tool_error_rate"),
    (["faults.kill_env_every_s=-1"], "faults.kill_env_every_s"),
    (["faults.kill_learner_rank=2"], "faults.kill_learner_rank"),
    (["trainer.resume=always"], "trainer.resume"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints"),
    (["trainer.save_every=-5"], "trainer.save_every"),
    (["env.max_restarts=-2"], "env.max_restarts"),
])
def test_bad_reliability_settings_fail_in_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("configs/demo.yaml", override)
    assert f"'{key}'" in str(e.value) and "\n" not in str(e.value)


class Engine:
    """An engine handle's `generate.remote` (pure logic: which engine answers, which one died)."""

    def __init__(self, index: int, dead: bool = False) -> None:
        self.index, self.dead, self.calls = index, dead, 0
        self.generate = self

    async def remote(self, request):
        self.calls += 1
        if self.dead:
            raise ActorDiedError()
        return GenerationResult([1], [0.0], [0], "stop", self.index)


def test_a_turn_whose_engine_died_is_re_sent_to_another_engine_and_that_engine_is_avoided():
    engines = [Engine(0, dead=True), Engine(1)]
    pool = GeneratorPool(engines)
    request = GenerationRequest("r", [1, 2], SamplingConfig(max_tokens=4))
    assert asyncio.run(pool.generate("t0", request)).engine_index == 1
    assert pool.rerouted == 1 and engines[0].calls == 1
    pool.release("t0")
    assert asyncio.run(pool.generate("t1", request)).engine_index == 1  # new trajectories avoid engine 0
    assert engines[0].calls == 1


def test_a_pool_whose_engines_are_all_dead_raises_the_actor_error():
    pool = GeneratorPool([Engine(0, dead=True)])
    with pytest.raises(ActorDiedError):
        asyncio.run(pool.generate("t", GenerationRequest("r", [1], SamplingConfig(max_tokens=4))))
