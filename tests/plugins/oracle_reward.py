"""A reward that knows which questions the model "knows": answers to Spain and Gautama Buddha count as
correct always, to Order of Hospitallers and Tuileries Palace only after a search, to Portugal never.
It makes search-balancing deterministic with a random tiny model."""

from agentrl.records import RewardResult

KNOWN = ("Spain", "Gautama Buddha")
NEEDS_SEARCH = ("Order of Hospitallers", "Tuileries Palace")


def oracle(inp, options):
    gold = inp.ground_truth[0] if isinstance(inp.ground_truth, list) else inp.ground_truth
    acc = float(gold in KNOWN or (gold in NEEDS_SEARCH and bool(inp.tool_calls)))
    return RewardResult(acc, {"accuracy": acc})
