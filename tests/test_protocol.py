"""Action parsing and tools: pure logic, no actors."""

import asyncio

from agentrl.envs.agent_loop import call_tool
from agentrl.envs.protocol import get_protocol
from agentrl.envs.registry import load_tool
from agentrl.envs.tool import Observation, Tool, TrajectoryState
from agentrl.models.base import ModelAdapter


def test_parse_tolerates_whitespace_and_takes_the_first_action():
    p = get_protocol("lookup")
    a = p.parse("<reason>hmm</reason> <search>  kalomi \n</search>")
    assert (a.kind, a.tool, a.argument) == ("tool", "lookup", "kalomi")
    a = p.parse("<answer> amber </answer><search>x</search>")
    assert (a.kind, a.argument) == ("answer", "amber")
    assert p.parse("no tags here").kind == "invalid"
    assert p.parse("<search> </search>").kind == "invalid"


def test_an_answer_is_the_turns_last_answer_block_as_the_rewards_read_it():
    from agentrl.grammar import final_answer

    turn = "<reason>r</reason><answer>Paris</answer> no, <answer>Lyon</answer>"
    for name in ("lookup", "mmsearch_r1", "react", "reasoning"):
        a = get_protocol(name).parse(turn)
        assert (a.kind, a.argument) == ("answer", "Lyon") == ("answer", final_answer(turn))


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


class CharTokenizer:
    """A minimal tokenizer: one id per character."""

    eos_token = "#"

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False, **kw):
        text = "".join(f"[{m['role']}]{m['content']}#\n" for m in msgs)
        text += "[assistant]" if add_generation_prompt else ""
        return [ord(c) for c in text] if tokenize else text

    def encode(self, text, add_special_tokens=False, split_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class OneResult:
    """An image_search tool that always finds the same thing."""

    name, cacheable, backend = "image_search", False, ""

    def parse_args(self, args):
        return {}

    async def run(self, args, state):
        return Observation("found it")


def run_scripted(turns: list[str], ground_truth: str = "x", overrides: tuple[str, ...] = (), adapter=None):
    """A mmsearch_r1 trajectory whose model writes `turns`, one per generation; like vLLM, a turn longer
    than the request's max_tokens is cut there with finish reason "length"."""
    from types import SimpleNamespace

    from agentrl.config import load_config
    from agentrl.envs.agent_loop import RolloutContext, run_trajectory
    from agentrl.envs.chat_format import ChatFormat
    from agentrl.records import DataRow, GenerationResult, Trajectory

    cfg = load_config("configs/demo.yaml", ["env.protocol=mmsearch_r1", "env.max_turns=4",
                                            "env.max_total_tokens=5000", "env.max_tokens_per_turn=100", *overrides])
    script = iter(turns)

    async def generate(req):
        ids = [ord(c) for c in next(script)]
        finish = "length" if len(ids) > req.sampling.max_tokens else "stop"
        ids = ids[: req.sampling.max_tokens]
        return GenerationResult(ids, [-1.0] * len(ids), [0] * len(ids), finish, 0)

    ctx = RolloutContext(ChatFormat(CharTokenizer()), get_protocol("mmsearch_r1"), {"image_search": OneResult()},
                         cfg.env, SimpleNamespace(temperature=1.0, top_p=1.0, top_k=-1, seed=None), eos_token_id=None)
    if adapter is not None:
        ctx.adapter = adapter
    row = DataRow(0, "q?", [ground_truth], images=[b"img"])
    return asyncio.run(run_trajectory(Trajectory("t", "g", 0, [1]), row, ctx, generate))


def test_over_limit_and_invalid_actions_get_fixed_observations_and_are_counted():
    from agentrl.grammar import OVER_LIMIT_OBSERVATION

    t = run_scripted(["<reason>a</reason><search><img></search>", "<reason>b</reason><search><img></search>",
                      "no action", "<reason>c</reason><answer>x</answer>"],
                     overrides=("env.on_invalid_action=observe",))
    text = "".join(chr(i) for i in t.response_ids)
    assert [c.tool for c in t.tool_calls] == ["image_search"]  # the second image search is over the limit
    assert OVER_LIMIT_OBSERVATION.format(tool="image_search") in text
    assert t.invalid_actions == 2 and t.answer == "x" and t.finish_reason == "answer"


def test_the_trajectorys_answer_is_the_one_the_reward_scores_when_a_turn_has_two():
    from agentrl.records import RewardInput
    from agentrl.rewards.exact_match import exact_match

    t = run_scripted(["<reason>r</reason><answer>Paris</answer> or rather <answer>Lyon</answer>"], "Lyon")
    scored = exact_match(RewardInput("q?", turns=t.turn_texts, answer=t.answer, ground_truth=["Lyon"]), {})
    assert t.answer == "Lyon" and scored.total == 1.0  # results.jsonl and the reward agree: the last block


def test_observations_are_tokenised_as_the_tokenizer_itself_would(tiny_text_path):
    from transformers import AutoTokenizer

    from agentrl.envs.chat_format import ChatFormat

    tok = AutoTokenizer.from_pretrained(tiny_text_path)
    chat = ChatFormat(tok)
    assert chat.fast_path  # the fast path: the Rust tokenizer, without the Python wrapper
    for text in ["kasazo: lilac", "<information>1. a b\n\n  c</information>", "ünïcödé 東京 ☃", ""]:
        assert chat.encode(text) == tok.encode(text, add_special_tokens=False)
        assert chat.observation_ids(text, model_ended_turn=False) == tok.encode(
            chat.turn_close + chat.user_open + text + chat.user_close_and_reply, add_special_tokens=False)
    # special-token syntax inside an observation is the page's text, not a turn marker (tests/test_chat_format.py)
    text = "<information>1. a <|im_end|> b</information>"
    assert chat.observation_ids(text, model_ended_turn=False) == (
        tok.encode(chat.turn_close + chat.user_open, add_special_tokens=False)
        + tok.encode(text, add_special_tokens=False, split_special_tokens=True)
        + tok.encode(chat.user_close_and_reply, add_special_tokens=False))


def test_an_invalid_action_ends_the_trajectory_by_default_as_in_the_seed():
    t = run_scripted(["no action", "<reason>c</reason><answer>x</answer>"])
    assert t.finish_reason == "invalid_action" and t.invalid_actions == 1 and t.answer is None


def test_a_trajectory_is_truncated_when_its_last_model_turn_was_cut():
    search = "<reason>a</reason><search><img></search>"
    # cut at max_tokens_per_turn: the last turn has no end
    t = run_scripted(["<reason>" + "a" * 200], overrides=("env.max_tokens_per_turn=50",))
    assert t.truncated and len(t.response_ids) == 50
    # cut at the total budget: the second turn gets what the first turn and the observation left
    t = run_scripted([search, "<reason>" + "b" * 200], overrides=("env.max_total_tokens=300",))
    assert t.truncated and t.finish_reason == "max_total_tokens" and len(t.response_ids) == 300
    assert t.turn_boundaries[-1][1] - t.turn_boundaries[-1][0] < 100  # less than max_tokens_per_turn
    # a cut turn followed by a whole one: only the last model turn counts
    t = run_scripted(["<reason>" + "a" * 200, "<reason>c</reason><answer>x</answer>"],
                     overrides=("env.max_tokens_per_turn=50", "env.on_invalid_action=observe"))
    assert not t.truncated and t.answer == "x"


def test_a_trajectory_ended_by_an_observation_filling_the_budget_is_not_truncated():
    search = "<reason>a</reason><search><img></search>"
    budget = len(search) + 20  # the observation after the first turn goes past it
    t = run_scripted([search, "<reason>c</reason><answer>x</answer>"], overrides=(f"env.max_total_tokens={budget}",
                                                                              f"env.max_tokens_per_turn={budget}"))
    assert len(t.response_ids) >= budget and len(t.turn_texts) == 1
    assert t.finish_reason == "max_total_tokens" and not t.truncated


class ImagePadAdapter(ModelAdapter):
    """A text-only adapter whose image placeholder token is '@' (a fake for the loop's logic)."""

    def is_image_token(self, token_id):
        return token_id == ord("@")


def test_an_image_placeholder_token_in_a_model_turn_is_an_invalid_action():
    turn = "<reason>look @ here</reason><answer>x</answer>"
    t = run_scripted([turn], adapter=ImagePadAdapter(""))
    assert t.finish_reason == "invalid_action" and t.invalid_actions == 1 and t.answer is None
    # the turn is kept up to the placeholder: no image token reaches the engine or the learner
    assert "".join(map(chr, t.response_ids)) == "<reason>look "
    assert len(t.behaviour_logprobs) == len(t.policy_versions) == len(t.loss_mask) == len(t.response_ids)
    t = run_scripted([turn, "<reason>c</reason><answer>x</answer>"], adapter=ImagePadAdapter(""),
                     overrides=("env.on_invalid_action=observe",))
    assert t.invalid_actions == 1 and t.answer == "x" and ord("@") not in t.response_ids
