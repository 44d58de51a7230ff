"""Action parsing and tools: pure logic, no actors."""

import asyncio

from agentrl.envs.agent_loop import call_tool
from agentrl.envs.protocol import get_protocol
from agentrl.envs.registry import load_tool
from agentrl.envs.tool import Observation, Tool, TrajectoryState


def test_parse_tolerates_whitespace_and_takes_the_first_action():
    p = get_protocol("lookup")
    a = p.parse("<reason>hmm</reason> <search>  kalomi \n</search>")
    assert (a.kind, a.tool, a.argument) == ("tool", "lookup", "kalomi")
    a = p.parse("<answer> amber </answer><search>x</search>")
    assert (a.kind, a.argument) == ("answer", "amber")
    assert p.parse("no tags here").kind == "invalid"
    assert p.parse("<search> </search>").kind == "invalid"


def test_plugin_tags_are_taken_literally_and_stop_generation():
    p = get_protocol("lookup", {"db.query": "db"})
    a = p.parse("<reason>r</reason><db.query> SELECT 1 </db.query>")
    assert (a.kind, a.tool, a.argument) == ("tool", "db", "SELECT 1")
    assert p.parse("<dbXquery>x</dbXquery>").kind == "invalid"  # '.' is a dot, not a regex wildcard
    assert "</db.query>" in p.stop and get_protocol("lookup").tool_tags == {"search": "lookup"}


def test_a_turn_of_many_spaces_parses_at_once():
    import time

    t0 = time.perf_counter()
    assert get_protocol("mmsearch_r1").parse("<answer>" + " " * 8000).kind == "invalid"
    assert time.perf_counter() - t0 < 0.5


def test_queries_are_length_limited():
    p = get_protocol("lookup")
    assert len(p.parse("<search>" + "x" * 5000 + "</search>").argument) == p.max_query_chars


def test_lookup_tool_answers_from_its_table():
    from agentrl.data.synthetic import lookup_table

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


def test_mmsearch_r1_actions():
    p = get_protocol("mmsearch_r1")
    a = p.parse("<reason>need the entity</reason>\n<search> <img> </search>")
    assert (a.kind, a.tool) == ("tool", "image_search")
    a = p.parse("<reason>r</reason><text_search>  eiffel   tower height </text_search>")
    assert (a.kind, a.tool, a.argument) == ("tool", "text_search", "eiffel   tower height")
    assert p.parse("<reason>r</reason><answer>Paris</answer>").argument == "Paris"
    obs = p.observation("results", question="Where is it?")
    assert obs.startswith("<information>results</information>\nQuestion: Where is it?")


def test_react_actions():
    p = get_protocol("react")
    assert p.parse("<reason>r</reason><search>image</search>").tool == "image_search"
    a = p.parse("<reason>r</reason><search>tallest tower</search>")
    assert (a.tool, a.argument) == ("text_search", "tallest tower")
    assert p.observation("x") == "<observation>x</observation>"


def test_reasoning_protocol_has_no_tools():
    p = get_protocol("reasoning")
    assert p.parse("<think>2+2</think><answer>4</answer>").argument == "4"
    assert p.parse("<think>t</think><search>x</search>").kind == "invalid"


def test_over_limit_and_invalid_actions_get_fixed_observations_and_are_counted():
    from types import SimpleNamespace

    from agentrl.config import load_config
    from agentrl.envs.agent_loop import ChatFormat, RolloutContext, run_trajectory
    from agentrl.grammar import OVER_LIMIT_OBSERVATION
    from agentrl.records import DataRow, GenerationResult, Trajectory

    class Tok:  # a minimal tokenizer: one id per character
        eos_token = "#"

        def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False, **kw):
            text = "".join(f"[{m['role']}]{m['content']}#\n" for m in msgs)
            text += "[assistant]" if add_generation_prompt else ""
            return [ord(c) for c in text] if tokenize else text

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(i) for i in ids)

    cfg = load_config("configs/demo.yaml", ["env.protocol=mmsearch_r1", "env.max_turns=4",
                                            "env.max_total_tokens=5000", "env.max_tokens_per_turn=100"])
    turns = iter(["<reason>a</reason><search><img></search>", "<reason>b</reason><search><img></search>",
                  "no action", "<reason>c</reason><answer>x</answer>"])

    class OneResult:
        async def run(self, args, state):
            from agentrl.envs.tool import Observation

            return Observation("found it")

    tool = OneResult()
    tool.name, tool.cacheable, tool.backend, tool.parse_args = "image_search", False, "", lambda a: {}

    async def generate(req):
        ids = [ord(c) for c in next(turns)]
        return GenerationResult(ids, [-1.0] * len(ids), [0] * len(ids), "stop", 0)

    ctx = RolloutContext(ChatFormat(Tok()), get_protocol("mmsearch_r1"), {"image_search": tool}, cfg.env,
                         SimpleNamespace(temperature=1.0, top_p=1.0, seed=None), eos_token_id=None)
    t = asyncio.run(run_trajectory(Trajectory("t", "g", 0, [1]), DataRow(0, "q?", ["x"], images=[b"img"]), ctx,
                                   generate))
    text = "".join(chr(i) for i in t.response_ids)
    assert [c.tool for c in t.tool_calls] == ["image_search"]  # the second image search is over the limit
    assert OVER_LIMIT_OBSERVATION.format(tool="image_search") in text
    assert t.invalid_actions == 2 and t.answer == "x" and t.finish_reason == "answer"


def test_observations_are_tokenised_as_the_tokenizer_itself_would(tiny_text_path):
    from transformers import AutoTokenizer

    from agentrl.envs.agent_loop import ChatFormat

    tok = AutoTokenizer.from_pretrained(tiny_text_path)
    chat = ChatFormat(tok)
    assert chat._backend is not None  # the fast path: the Rust tokenizer, without the Python wrapper
    for text in ["kasazo: lilac", "<information>1. a <|im_end|> b\n\n  c</information>", "ünïcödé 東京 ☃", ""]:
        assert chat.encode(text) == tok.encode(text, add_special_tokens=False)
        assert chat.observation_ids(text, model_ended_turn=False) == tok.encode(
            chat.turn_close + chat.user_open + text + chat.user_close_and_reply, add_special_tokens=False)
