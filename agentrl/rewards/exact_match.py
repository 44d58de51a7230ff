"""The `exact_match` reward: 1 when the trajectory's answer equals a gold answer after normalisation."""

from __future__ import annotations

from typing import Any

from agentrl.records import RewardInput, RewardResult
from agentrl.rewards.answers import gold_answers, is_correct, predicted_answer
from agentrl.rewards.registry import register_reward


@register_reward("exact_match")
def exact_match(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """1 if the normalised answer (the last turn's final answer) equals a normalised gold answer, else 0."""
    golds = gold_answers(inp.ground_truth, inp.candidate_answers)
    acc = 1.0 if is_correct(predicted_answer(inp), golds, "EM") else 0.0
    return RewardResult(acc, {"accuracy": acc, "search_count": float(len(inp.tool_calls))})
