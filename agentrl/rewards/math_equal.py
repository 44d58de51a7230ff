"""Math-verify equality of an answer and gold answers; run in a deadline worker (agentrl/deadline.py),
never in an actor's own process: sympy on a hostile expression can run for ever."""

from __future__ import annotations


def math_equal(prediction: str, golds: list[str]) -> bool:
    """Whether math-verify finds the prediction equal to any gold answer (no timeouts of its own: signals
    do not work here, the caller's deadline kills the process instead)."""
    from math_verify import parse, verify

    target = parse(prediction, parsing_timeout=None)
    if not target:
        return False
    return any(verify(parse(g, parsing_timeout=None), target, timeout_seconds=None) for g in golds)
