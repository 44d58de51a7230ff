"""Action protocols: the prompt a model sees, how its turn is parsed into an action, and how an
observation is written back. Chosen by `env.protocol`.

- `lookup`: the demo's `<search>name</search>` / `<answer>` with `<information>` results.
- `mmsearch_r1`: `<reason>`, then one of `<search><img></search>`, `<text_search>q</text_search>`,
  `<answer>`; results in `<information>`, followed by the question and the after-search instruction.
- `react`: `<reason>`, then `<answer>`, `<search>image</search>` or `<search>text query</search>`;
  results in `<observation>`.
- `reasoning`: `<think>...</think><answer>...</answer>`, no tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IMAGE_SEARCH_TOOL = "image_search"
TEXT_SEARCH_TOOL = "text_search"


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
    tool_tags: dict[str, str] = field(default_factory=dict)  # tag -> tool name
    stop: list[str] = field(default_factory=list)
    after_search_prompt: str = ""  # appended to each observation, with {question}
    max_query_chars: int = 256

    def _candidates(self, text: str) -> list[tuple[int, Action]]:
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
        return found

    def parse(self, text: str) -> Action:
        """The first complete action tag in the turn; whitespace around tags is tolerated."""
        found = self._candidates(text)
        if not found:
            return Action("invalid", error="no valid action tag")
        return min(found, key=lambda x: x[0])[1]

    def observation(self, text: str, question: str = "") -> str:
        out = f"{self.observation_open}{text}{self.observation_close}"
        if self.after_search_prompt:
            out += "\n" + self.after_search_prompt.format(question=question)
        return out


class MMSearchProtocol(Protocol):
    """`<search><img></search>` takes no query: it searches the trajectory's input image."""

    def parse(self, text: str) -> Action:
        found = self._candidates(text)
        m = re.search(r"<search>\s*<img>\s*</search>", text)
        if m:
            found.append((m.start(), Action("tool", tool=IMAGE_SEARCH_TOOL, argument="")))
        if not found:
            return Action("invalid", error="no valid action tag")
        return min(found, key=lambda x: x[0])[1]


class ReactProtocol(Protocol):
    """`<search>image</search>` searches the input image; any other `<search>` text is a text query."""

    def parse(self, text: str) -> Action:
        action = super().parse(text)
        if action.kind == "tool" and action.argument.strip().lower() == "image":
            return Action("tool", tool=IMAGE_SEARCH_TOOL, argument="")
        return action


INVALID_ACTION_OBSERVATION = (
    "Your last turn had no valid action. Reply with one action: a search in its tags, or the final "
    "answer in <answer></answer>."
)
OVER_LIMIT_OBSERVATION = "You have used all your {tool} calls. Answer the question now in <answer></answer>."

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

# Our wording, faithful to the seed's Search template.
MMSEARCH_R1 = MMSearchProtocol(
    name="mmsearch_r1",
    system_prompt=(
        "Answer the user's question about the image. First think about what you know and what you "
        "are missing inside <reason> and </reason>. Then take exactly one action:\n"
        "- If you can answer, write the short final answer inside <answer> and </answer>.\n"
        "- If you need to identify what the image shows, write <search><img></search> to search the web "
        "with the image; the results come back inside <information> and </information>.\n"
        "- If you need a fact, write a text query inside <text_search> and </text_search>; summaries of "
        "web pages come back inside <information> and </information>.\n"
        "Search only when you need to."
    ),
    observation_open="<information>",
    observation_close="</information>",
    tool_tags={"text_search": TEXT_SEARCH_TOOL},
    stop=["</search>", "</text_search>", "</answer>"],
    after_search_prompt=(
        "Question: {question}\nUse the information above. Think inside <reason> and </reason>, then "
        "either answer inside <answer> and </answer> or take one more search action if you still need it."
    ),
)

REACT = ReactProtocol(
    name="react",
    system_prompt=(
        "Answer the user's question. Reason step by step inside <reason> and </reason>, then act once: "
        "<answer>final answer</answer>, <search>image</search> to search the web with the input image, or "
        "<search>your query</search> to search the web with text. Results come back inside <observation> "
        "and </observation>."
    ),
    observation_open="<observation>",
    observation_close="</observation>",
    tool_tags={"search": TEXT_SEARCH_TOOL},
    stop=["</search>", "</answer>"],
)

REASONING = Protocol(
    name="reasoning",
    system_prompt=(
        "Solve the problem. Think step by step inside <think> and </think>, then give the final answer "
        "inside <answer> and </answer>."
    ),
    observation_open="",
    observation_close="",
    stop=["</answer>"],
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [LOOKUP, MMSEARCH_R1, REACT, REASONING]}


def get_protocol(name: str, extra_tags: dict[str, str] | None = None) -> Protocol:
    """A protocol by name, with extra `<tag>argument</tag>` actions for plugin tools."""
    if name not in PROTOCOLS:
        raise ValueError(f"env.protocol '{name}' is unknown; known: {sorted(PROTOCOLS)}")
    proto = PROTOCOLS[name]
    if extra_tags:
        import copy

        proto = copy.copy(proto)
        proto.tool_tags = {**proto.tool_tags, **extra_tags}
        proto.stop = [*proto.stop, *(f"</{t}>" for t in extra_tags)]
    return proto
