"""The answer rules every reward shares: which answer a trajectory gave, which answers are gold, and
when they match (exact or contained, after SQuAD-style normalisation)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from agentrl.grammar import final_answer
from agentrl.records import RewardInput

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def gold_answers(ground_truth: Iterable[str] | str, candidate_answers: Iterable[str] = ()) -> list[str]:
    """The gold answers: the ground truth (a string is one answer, a list several), then the candidates."""
    golds = [ground_truth] if isinstance(ground_truth, str) else list(ground_truth)
    return golds + list(candidate_answers)


def predicted_answer(inp: RewardInput) -> str | None:
    """The trajectory's answer: the final answer of its last turn, or `inp.answer` when there are no turns."""
    return final_answer(inp.turns[-1]) if inp.turns else inp.answer


def is_correct(answer: str | None, golds: list[str], mode: str = "EM") -> bool:
    """`EM`: the normalised answer equals a normalised gold; `SubEM`: a normalised gold occurs inside it.
    An answer or a gold that normalises to nothing ("", "The", "a.") never matches: an empty answer is not
    right because a gold was only an article."""
    if mode not in ("EM", "SubEM"):
        raise ValueError(f"reward option reward_mode: '{mode}' is not 'EM' or 'SubEM'")
    pred = normalize_answer(answer) if answer is not None else ""
    norm = [g for g in map(normalize_answer, golds) if g]
    if not pred:
        return False
    if mode == "EM":
        return pred in norm
    return any(g in pred for g in norm)
