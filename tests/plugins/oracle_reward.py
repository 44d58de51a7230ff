"""A reward that knows which questions the model "knows", by the example dataset's kinds of question:
a tile's colour counts as correct always, its name only after a search, its name spelled backwards never.
It makes search-balancing deterministic with a random tiny model."""

from agentrl.data.example import QUESTIONS
from agentrl.records import RewardResult

KNOWN = (QUESTIONS["colour"],)
NEEDS_SEARCH = (QUESTIONS["name"],)


def oracle(inp, options):
    acc = float(inp.question in KNOWN or (inp.question in NEEDS_SEARCH and bool(inp.tool_calls)))
    return RewardResult(acc, {"accuracy": acc})
