"""The action grammar (agentrl/grammar.py): blocks, the final answer, the turn shapes the MMSearch-R1 reward
accepts, the scripted workflows' checks, and linear-time scanning of adversarial model output."""

import time

import pytest

from agentrl import grammar as g

R = "<reason>I think.</reason>"


def test_action_tags_are_the_tiny_tokenizers_single_tokens_in_their_order():
    assert g.ACTION_TAGS == [
        "<reason>", "</reason>", "<search>", "</search>", "<text_search>", "</text_search>",
        "<answer>", "</answer>", "<information>", "</information>", "<observation>", "</observation>",
        "<think>", "</think>", "<img>"]
    assert g.IMAGE_SEARCH_ACTION == "<search><img></search>"


def test_the_tokenizer_corpus_holds_every_protocol_prompt_and_the_invalid_action_text():
    from agentrl.data.synthetic import synthetic_corpus
    from agentrl.envs.protocol import PROTOCOLS

    corpus = synthetic_corpus()
    assert all(text in corpus for text in g.PROTOCOL_PROMPTS.values())
    assert g.INVALID_ACTION_OBSERVATION in corpus
    assert {name: p.system_prompt for name, p in PROTOCOLS.items()} == g.PROTOCOL_PROMPTS


def test_the_final_answer_is_the_last_answer_block_stripped():
    assert g.final_answer("<answer> Paris </answer>") == "Paris"
    assert g.final_answer("<answer>Big Ben</answer> then <answer>\nEiffel Tower </answer>") == "Eiffel Tower"
    assert g.final_answer("<answer></answer>") == ""
    assert g.final_answer("no answer") is None
    assert g.final_answer("<answer>never closed") is None
    assert g.final_answer("</answer><answer>") is None


def test_a_block_runs_to_the_first_close_after_its_open():
    # as the regex `<answer>(.*?)</answer>` reads it: an inner open is content, not a new block
    assert g.final_answer("<answer>a<answer>b</answer>") == "a<answer>b"
    assert g.first_block("x <search> q </search><search>r</search>", "search") == (2, "q")
    assert g.last_block("x <search> q </search><search>r</search>", "search") == "r"
    assert g.first_block("<search>q", "search") is None


def test_tag_names_are_literal_text():
    assert g.first_block("<aXb>q</aXb>", "a.b") is None
    assert g.first_block("<a.b>q</a.b>", "a.b") == (0, "q")
    assert g.first_block("<a+>q</a+>", "a+") == (0, "q")


def test_the_image_search_tolerates_whitespace_between_its_tags():
    assert g.find_image_search("<reason>r</reason>\n<search> <img>\n</search>") == 19
    assert g.find_image_search("<search>x<img></search>") == -1
    assert g.find_image_search("<search><search> <img></search>") == 8


@pytest.mark.parametrize("turn,direct,image,text", [
    (R + "<answer>Paris</answer>", True, False, False),
    (R + " so: <answer>Paris</answer>\n", True, False, False),  # a trailing newline is allowed, as `$` does
    (R + "<answer>Paris</answer>.", False, False, False),  # something after the answer
    ("<answer>Paris</answer>", False, False, False),  # no reason
    (R + R + "<answer>Paris</answer>", False, False, False),  # two reasons
    (R + "<answer>a</answer><answer>b</answer>", False, False, False),  # two answers
    (R + "<search><img></search><answer>a</answer>", False, False, False),  # a search and an answer
    (R + "<search><img></search>", False, True, False),
    (R + "<search> <img> </search>", False, False, False),  # the reward wants the action verbatim
    (R + "<text_search>eiffel tower</text_search>", False, False, True),
    (R + "<text_search>a</text_search><text_search>b</text_search>", False, False, False),
    ("<answer>x</answer>" + R + "<text_search>q</text_search>", False, False, False),
])
def test_turn_shapes_of_the_mmsearch_r1_reward(turn, direct, image, text):
    assert (g.is_direct_answer(turn), g.is_image_search(turn), g.is_text_search(turn)) == (direct, image, text)


@pytest.mark.parametrize("turn,action", [
    (R + "<answer>Paris</answer>", "answer"),
    (R + " <search> Image </search> ", "image"),
    (R + "<search>tallest tower</search>", "text"),
    (R + "<search>a</search><search>b</search>", None),
    (R + "<answer>a</answer> and more", None),
    ("<search>q</search>", None),
])
def test_react_turns(turn, action):
    assert g.react_action(turn) == action


def test_workflows_are_checked_against_the_protocol_and_tools():
    g.check_workflow("rag", "mmsearch_r1", [g.IMAGE_SEARCH_TOOL, g.TEXT_SEARCH_TOOL])
    with pytest.raises(ValueError, match="not one of direct, rag, on_demand"):
        g.check_workflow("ragg", "mmsearch_r1", [])
    g.check_workflow("rag", "react", [g.TEXT_SEARCH_TOOL])  # text only: a text search, then the answer
    assert g.rag_turn_regex("mmsearch_r1", 32, image=False) == g.rag_turn_regex("mmsearch_r1", 32)[1:]
    with pytest.raises(ValueError, match="env.tools lacks text_search"):
        g.check_workflow("rag", "react", [g.IMAGE_SEARCH_TOOL])
    with pytest.raises(ValueError, match="has no image and text search actions"):
        g.check_workflow("rag", "lookup", [g.IMAGE_SEARCH_TOOL, g.TEXT_SEARCH_TOOL])


ADVERSARIAL = {  # 100,000 characters each: a backtracking regex takes minutes on the first
    "open answer, then spaces": "<answer>" + " " * 99_992,
    "reason, open answer, then spaces": "<reason>r</reason><answer>" + " " * 99_974,
    "opens only": "<answer>" * 12_500,
    "closes only": "</answer>" * 11_111,
    "search opens and whitespace": "<search> \n" * 10_000,
    "unfinished image searches": "<search> <img> " * 6_666,
    "reasons": "<reason></reason>" * 5_882,
}


def test_adversarial_turns_parse_and_format_check_in_linear_time():
    from agentrl.envs.protocol import get_protocol
    from agentrl.rewards.mmsearch_r1 import general_format, mmsearch_r1_format

    t0 = time.perf_counter()
    for turn in ADVERSARIAL.values():
        for name in ("lookup", "mmsearch_r1", "react", "reasoning"):
            get_protocol(name, {"plug.in": "plugin"}).parse(turn)
        g.final_answer(turn)
        mmsearch_r1_format([turn, turn])
        general_format([turn], {})
        general_format([turn], {"protocol": "react"})
    assert time.perf_counter() - t0 < 1.0
