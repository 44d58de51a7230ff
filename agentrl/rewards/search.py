"""The MMSearch-R1 rewards: `mmsearch_r1` reproduces the published reward exactly; `general` keeps its
accuracy and search penalty but accepts any well-formed action sequence the protocol allows.

total = (1 - format_penalty) * accuracy * penalty + format_penalty * format, where the search penalty
multiplies only a correct answer that used at least one search: once, or once per search with
`use_search_count_penalty`.
"""

from __future__ import annotations

import re
from typing import Any

from agentrl.records import RewardInput, RewardResult
from agentrl.rewards.registry import normalize_answer, register_reward

IMAGE_SEARCH = "<search><img></search>"
_DIRECT = re.compile(r"^<reason>.*</reason>.*<answer>.*</answer>$", re.S)
_IMAGE = re.compile(r"^<reason>.*</reason>.*<search><img></search>$", re.S)
_TEXT = re.compile(r"^<reason>.*</reason>.*<text_search>.*</text_search>$", re.S)


def last_answer(turn: str) -> str | None:
    """The last <answer>...</answer> of a turn, stripped; None without one."""
    found = re.findall(r"<answer>(.*?)</answer>", turn, re.S)
    return found[-1].strip() if found else None


def is_correct(answer: str | None, golds: list[str], mode: str) -> bool:
    if answer is None:
        return False
    pred = normalize_answer(answer)
    norm = [normalize_answer(g) for g in golds]
    if mode == "EM":
        return pred in norm
    if mode == "SubEM":
        return any(g in pred for g in norm)
    raise ValueError(f"reward option reward_mode: '{mode}' is not 'EM' or 'SubEM'")


def _one_reason(t: str) -> bool:
    return t.count("<reason>") == 1 and t.count("</reason>") == 1


def is_direct_answer(t: str) -> bool:
    return (bool(_DIRECT.match(t)) and _one_reason(t) and t.count("<answer>") == 1
            and t.count("</answer>") == 1 and IMAGE_SEARCH not in t
            and "<text_search>" not in t and "</text_search>" not in t)


def is_image_search(t: str) -> bool:
    return (bool(_IMAGE.match(t)) and _one_reason(t) and t.count(IMAGE_SEARCH) == 1
            and "<answer>" not in t and "</answer>" not in t
            and "<text_search>" not in t and "</text_search>" not in t)


def is_text_search(t: str) -> bool:
    return (bool(_TEXT.match(t)) and _one_reason(t) and t.count("<text_search>") == 1
            and t.count("</text_search>") == 1 and "<answer>" not in t and "</answer>" not in t
            and IMAGE_SEARCH not in t)


def _has_search(t: str) -> bool:
    return IMAGE_SEARCH in t or ("<text_search>" in t and "</text_search>" in t)


def mmsearch_r1_format(turns: list[str]) -> tuple[float, int]:
    """Format score and search count exactly as the original: only these shapes score 1 —
    answer; image search, answer; text search, answer; image search, text search, answer."""
    t = [x.strip() for x in turns]
    searches = sum(_has_search(x) for x in (t if len(t) == 1 else t[:-1]))
    ok = False
    if len(t) == 1:
        ok = is_direct_answer(t[0])
    elif len(t) == 2:
        ok = (is_image_search(t[0]) or is_text_search(t[0])) and is_direct_answer(t[1])
    elif len(t) == 3:
        ok = is_image_search(t[0]) and is_text_search(t[1]) and is_direct_answer(t[2])
    return float(ok), searches


def _react_action(t: str) -> str | None:
    """`react` protocol: <reason> then one of <answer>, <search>image</search>, <search>query</search>."""
    if not _one_reason(t) or not t.startswith("<reason>"):
        return None
    rest = t[t.index("</reason>") + len("</reason>"):].strip()
    if re.fullmatch(r"<answer>.*</answer>", rest, re.S) and rest.count("<answer>") == 1:
        return "answer"
    m = re.fullmatch(r"<search>(.*)</search>", rest, re.S)
    if m and rest.count("<search>") == 1:
        return "image" if m.group(1).strip().lower() == "image" else "text"
    return None


def _mmsearch_action(t: str) -> str | None:
    if is_direct_answer(t):
        return "answer"
    if is_image_search(t):
        return "image"
    if is_text_search(t):
        return "text"
    return None


def general_format(turns: list[str], options: dict[str, Any]) -> tuple[float, int]:
    """1 for any sequence of searches within the limits followed by one answer, each turn one
    <reason> block and one action; the search count counts every search turn."""
    parse = _react_action if options.get("protocol", "mmsearch_r1") == "react" else _mmsearch_action
    actions = [parse(x.strip()) for x in turns]
    searches = sum(a in ("image", "text") for a in actions)
    limits = {"image": int(options.get("max_image_searches", 1)), "text": int(options.get("max_text_searches", 2))}
    ok = (bool(actions) and actions[-1] == "answer" and all(a in ("image", "text") for a in actions[:-1])
          and all(actions.count(k) <= v for k, v in limits.items())
          and len(actions) <= int(options.get("max_turns", 3)))
    return float(ok), searches


def combine(acc: float, fmt: float, searches: int, options: dict[str, Any]) -> RewardResult:
    """total = (1 - format_penalty) * accuracy * search penalty + format_penalty * format."""
    search_penalty = float(options.get("search_penalty", 0.1))
    format_penalty = float(options.get("format_penalty", 0.1))
    score = acc
    if searches > 0 and score > 0.99:  # only a correct answer pays for its searches
        score *= (1 - search_penalty) ** (searches if options.get("use_search_count_penalty") else 1)
    total = (1 - format_penalty) * score + format_penalty * fmt
    return RewardResult(total, {"accuracy": acc, "format": fmt, "search_count": float(searches)})


def _combine(inp: RewardInput, options: dict[str, Any], fmt: float, searches: int) -> RewardResult:
    golds = ([inp.ground_truth] if isinstance(inp.ground_truth, str) else list(inp.ground_truth))
    golds += list(inp.candidate_answers)
    answer = last_answer(inp.turns[-1]) if inp.turns else None
    acc = 1.0 if is_correct(answer, golds, options.get("reward_mode", "EM")) else 0.0
    return combine(acc, fmt, searches, options)


@register_reward("mmsearch_r1")
def mmsearch_r1_reward(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """The published MMSearch-R1 reward."""
    fmt, searches = mmsearch_r1_format(inp.turns) if inp.turns else (0.0, 0)
    return _combine(inp, options, fmt, searches)


@register_reward("general")
def general_reward(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """The MMSearch-R1 accuracy and penalty with a format score for any allowed action sequence."""
    fmt, searches = general_format(inp.turns, options) if inp.turns else (0.0, 0)
    return _combine(inp, options, fmt, searches)
