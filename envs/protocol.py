"""Action protocols: the prompt a model sees, how its turn is parsed into an action, and how an
observation is written back. Chosen by `env.protocol`."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Action:
    """What one model turn asks for."""

    kind: str  # "answer" | "tool" | "invalid"
    tool: str = ""
    argument: str = ""
    error: str = ""


@dataclass
class Protocol:
    name: str
    system_prompt: str
    observation_open: str
    observation_close: str
    tool_tags: dict[str, str]  # tag -> tool name
    stop: list[str]
    max_query_chars: int = 256

    def parse(self, text: str) -> Action:
        """The first complete action tag in the turn; whitespace around tags is tolerated."""
        found: list[tuple[int, Action]] = []
        m = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.S)
        if m:
            found.append((m.start(), Action("answer", argument=m.group(1).strip())))
        for tag, tool in self.tool_tags.items():
            m = re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", text, re.S)
            if m:
                arg = m.group(1).strip()
                if not arg:
                    found.append((m.start(), Action("invalid", error=f"empty <{tag}> query")))
                else:
                    found.append((m.start(), Action("tool", tool=tool, argument=arg[: self.max_query_chars])))
        if not found:
            return Action("invalid", error="no valid action tag")
        return min(found, key=lambda x: x[0])[1]

    def observation(self, text: str) -> str:
        return f"{self.observation_open}{text}{self.observation_close}"


INVALID_ACTION_OBSERVATION = (
    "Your last turn had no valid action. Reply with one action: a search in its tags, or the final "
    "answer in <answer></answer>."
)

LOOKUP = Protocol(
    name="lookup",
    system_prompt=(
        "Answer the question. Think inside <reason> and </reason>. If you do not know the answer, "
        "look it up with <search>name</search>; the result comes back inside <information> and "
        "</information>. Give the final answer inside <answer> and </answer>."
    ),
    observation_open="<information>",
    observation_close="</information>",
    tool_tags={"search": "lookup"},
    stop=["</search>", "</answer>"],
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [LOOKUP]}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"env.protocol '{name}' is unknown; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
