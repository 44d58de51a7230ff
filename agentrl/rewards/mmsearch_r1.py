"""The MMSearch-R1 rewards: `mmsearch_r1` reproduces the published reward exactly; `general` keeps its
accuracy and search penalty but accepts any well-formed action sequence the protocol allows.

total = (1 - format_penalty) * accuracy * penalty + format_penalty * format, where the search penalty
multiplies only a correct answer that used at least one search: once, or once per search with
`use_search_count_penalty`. The turn shapes are those of the action grammar (`agentrl.grammar`).
"""

from __future__ import annotations

from typing import Any

from agentrl.grammar import has_search, is_direct_answer, is_image_search, is_text_search, mmsearch_action, react_action
from agentrl.records import RewardInput, RewardResult
from agentrl.rewards.answers import gold_answers, is_correct, predicted_answer
from agentrl.rewards.registry import register_reward

FORMATS = ("mmsearch_r1", "general")


def mmsearch_r1_format(turns: list[str]) -> tuple[float, int]:
    """Format score and search count exactly as the original: only these shapes score 1 —
    answer; image search, answer; text search, answer; image search, text search, answer."""
    t = [x.strip() for x in turns]
    searches = sum(has_search(x) for x in (t if len(t) == 1 else t[:-1]))
    ok = False
    if len(t) == 1:
        ok = is_direct_answer(t[0])
    elif len(t) == 2:
        ok = (is_image_search(t[0]) or is_text_search(t[0])) and is_direct_answer(t[1])
    elif len(t) == 3:
        ok = is_image_search(t[0]) and is_text_search(t[1]) and is_direct_answer(t[2])
    return float(ok), searches


def general_format(turns: list[str], options: dict[str, Any]) -> tuple[float, int]:
    """1 for any sequence of searches within the limits followed by one answer, each turn one
    <reason> block and one action; the search count counts every search turn."""
    parse = react_action if options.get("protocol", "mmsearch_r1") == "react" else mmsearch_action
    actions = [parse(x.strip()) for x in turns]
    searches = sum(a in ("image", "text") for a in actions)
    limits = {"image": int(options.get("max_image_searches", 1)), "text": int(options.get("max_text_searches", 2))}
    ok = (bool(actions) and actions[-1] == "answer" and all(a in ("image", "text") for a in actions[:-1])
          and all(actions.count(k) <= v for k, v in limits.items())
          and len(actions) <= int(options.get("max_turns", 3)))
    return float(ok), searches


def format_score(turns: list[str], options: dict[str, Any], style: str) -> tuple[float, int]:
    """Format score and search count under `style` ("mmsearch_r1" or "general"); (0, 0) without turns."""
    if not turns:
        return 0.0, 0
    if style == "mmsearch_r1":
        return mmsearch_r1_format(turns)
    if style == "general":
        return general_format(turns, options)
    raise ValueError(f"reward option format: '{style}' is not one of {', '.join(FORMATS)}")


def combine(acc: float, fmt: float, searches: int, options: dict[str, Any]) -> RewardResult:
    """total = (1 - format_penalty) * accuracy * search penalty + format_penalty * format."""
    search_penalty = float(options.get("search_penalty", 0.1))
    format_penalty = float(options.get("format_penalty", 0.1))
    score = acc
    if searches > 0 and score > 0.99:  # only a correct answer pays for its searches
        score *= (1 - search_penalty) ** (searches if options.get("use_search_count_penalty") else 1)
    total = (1 - format_penalty) * score + format_penalty * fmt
    return RewardResult(total, {"accuracy": acc, "format": fmt, "search_count": float(searches)})


def _score(inp: RewardInput, options: dict[str, Any], style: str) -> RewardResult:
    fmt, searches = format_score(inp.turns, options, style)
    golds = gold_answers(inp.ground_truth, inp.candidate_answers)
    acc = 1.0 if is_correct(predicted_answer(inp), golds, options.get("reward_mode", "EM")) else 0.0
    return combine(acc, fmt, searches, options)


@register_reward("mmsearch_r1")
def mmsearch_r1_reward(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """The published MMSearch-R1 reward."""
    return _score(inp, options, "mmsearch_r1")


@register_reward("general")
def general_reward(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """The MMSearch-R1 accuracy and penalty with a format score for any allowed action sequence."""
    return _score(inp, options, "general")
