"""Action parsing and tools: pure logic, no actors."""

import asyncio

from envs.agent_loop import call_tool
from envs.protocol import get_protocol
from envs.tool import Observation, Tool, TrajectoryState, load_tool


def test_parse_tolerates_whitespace_and_takes_the_first_action():
    p = get_protocol("lookup")
    a = p.parse("<reason>hmm</reason> <search>  kalomi \n</search>")
    assert (a.kind, a.tool, a.argument) == ("tool", "lookup", "kalomi")
    a = p.parse("<answer> amber </answer><search>x</search>")
    assert (a.kind, a.argument) == ("answer", "amber")
    assert p.parse("no tags here").kind == "invalid"
    assert p.parse("<search> </search>").kind == "invalid"


def test_queries_are_length_limited():
    p = get_protocol("lookup")
    assert len(p.parse("<search>" + "x" * 5000 + "</search>").argument) == p.max_query_chars


def test_lookup_tool_answers_from_its_table():
    from agentrl.data import lookup_table

    name, colour = next(iter(lookup_table().items()))
    tool = load_tool("lookup")
    obs, call = asyncio.run(call_tool(tool, name, TrajectoryState("q"), timeout_s=5))
    assert obs.text == f"{name}: {colour}" and call.ok and call.tool == "lookup"


class _Slow(Tool):
    name = "slow"

    async def run(self, args, state):
        await asyncio.sleep(10)
        return Observation("late")


class _Broken(Tool):
    name = "broken"

    async def run(self, args, state):
        raise ConnectionError("backend down")


def test_tool_timeouts_and_errors_become_error_observations():
    state = TrajectoryState("q")
    obs, call = asyncio.run(call_tool(_Slow(), "x", state, timeout_s=0.05))
    assert not obs.ok and call.error == "timeout"
    obs, call = asyncio.run(call_tool(_Broken(), "x", state, timeout_s=1))
    assert not obs.ok and "backend down" in call.error
    assert state.tool_counts == {"slow": 1, "broken": 1}


def test_unknown_tool_is_named():
    import pytest

    with pytest.raises(ValueError, match="nosuchtool"):
        load_tool("nosuchtool")
