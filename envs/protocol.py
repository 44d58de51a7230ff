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

from dataclasses import dataclass, field

from agentrl.grammar import (
    ANSWER,
    IMAGE_SEARCH_TOOL,
    INFORMATION,
    MMSEARCH_R1_AFTER_SEARCH_PROMPT,
    OBSERVATION,
    PROTOCOL_PROMPTS,
    SEARCH,
    TEXT_SEARCH,
    TEXT_SEARCH_TOOL,
    close_tag,
    final_answer,
    find_image_search,
    first_block,
    open_tag,
)


@dataclass
class Action:
    """What one model turn asks for. An answer's argument is the turn's final answer
    (`agentrl.grammar.final_answer`, its last `<answer>` block): the one the rewards score."""

    kind: str  # "answer" | "tool" | "invalid"
    tool: str = ""
    argument: str = ""
    error: str = ""


@dataclass
class Protocol:
    """A protocol's prompt, its action tags (answer and `tool_tags`), stop strings and observation tags."""

    name: str
    system_prompt: str
    observation_open: str
    observation_close: str
    tool_tags: dict[str, str] = field(default_factory=dict)  # tag -> tool name
    stop: list[str] = field(default_factory=list)
    after_search_prompt: str = ""  # appended to each observation, with {question}
    max_query_chars: int = 256

    def _candidates(self, text: str) -> list[tuple[int, Action]]:
        """Every action the turn holds, each at the start of its first complete block."""
        found: list[tuple[int, Action]] = []
        block = first_block(text, ANSWER)
        if block is not None:  # placed by its first block; its answer is the turn's final one, as rewards read it
            found.append((block[0], Action("answer", argument=final_answer(text) or "")))
        for tag, tool in self.tool_tags.items():
            block = first_block(text, tag)
            if block is None:
                continue
            start, arg = block
            if not arg:
                found.append((start, Action("invalid", error=f"empty {open_tag(tag)} query")))
            else:
                found.append((start, Action("tool", tool=tool, argument=arg[: self.max_query_chars])))
        return found

    def parse(self, text: str) -> Action:
        """The first complete action tag in the turn; whitespace around tags is tolerated."""
        return _first(self._candidates(text))

    def observation(self, text: str, question: str = "") -> str:
        """A tool's result as the model reads it: in the observation tags, then the after-search prompt."""
        out = f"{self.observation_open}{text}{self.observation_close}"
        if self.after_search_prompt:
            out += "\n" + self.after_search_prompt.format(question=question)
        return out


def _first(found: list[tuple[int, Action]]) -> Action:
    if not found:
        return Action("invalid", error="no valid action tag")
    return min(found, key=lambda x: x[0])[1]  # on a tie, the earlier candidate


class MMSearchProtocol(Protocol):
    """`<search><img></search>` takes no query: it searches the trajectory's input image."""

    def parse(self, text: str) -> Action:
        found = self._candidates(text)
        start = find_image_search(text)
        if start >= 0:
            found.append((start, Action("tool", tool=IMAGE_SEARCH_TOOL, argument="")))
        return _first(found)


class ReactProtocol(Protocol):
    """`<search>image</search>` searches the input image; any other `<search>` text is a text query."""

    def parse(self, text: str) -> Action:
        action = super().parse(text)
        if action.kind == "tool" and action.argument.strip().lower() == "image":
            return Action("tool", tool=IMAGE_SEARCH_TOOL, argument="")
        return action


LOOKUP = Protocol(
    name="lookup",
    system_prompt=PROTOCOL_PROMPTS["lookup"],
    observation_open=open_tag(INFORMATION),
    observation_close=close_tag(INFORMATION),
    tool_tags={SEARCH: "lookup"},
    stop=[close_tag(SEARCH), close_tag(ANSWER)],
)

MMSEARCH_R1 = MMSearchProtocol(
    name="mmsearch_r1",
    system_prompt=PROTOCOL_PROMPTS["mmsearch_r1"],
    observation_open=open_tag(INFORMATION),
    observation_close=close_tag(INFORMATION),
    tool_tags={TEXT_SEARCH: TEXT_SEARCH_TOOL},
    stop=[close_tag(SEARCH), close_tag(TEXT_SEARCH), close_tag(ANSWER)],
    after_search_prompt=MMSEARCH_R1_AFTER_SEARCH_PROMPT,
)

REACT = ReactProtocol(
    name="react",
    system_prompt=PROTOCOL_PROMPTS["react"],
    observation_open=open_tag(OBSERVATION),
    observation_close=close_tag(OBSERVATION),
    tool_tags={SEARCH: TEXT_SEARCH_TOOL},
    stop=[close_tag(SEARCH), close_tag(ANSWER)],
)

REASONING = Protocol(
    name="reasoning",
    system_prompt=PROTOCOL_PROMPTS["reasoning"],
    observation_open="",
    observation_close="",
    stop=[close_tag(ANSWER)],
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [LOOKUP, MMSEARCH_R1, REACT, REASONING]}


def get_protocol(name: str, extra_tags: dict[str, str] | None = None, system_prompt: str = "") -> Protocol:
    """A protocol by name, with extra `<tag>argument</tag>` actions for plugin tools (tags taken literally)
    and, when given, its own system prompt (`env.system_prompt`) instead of the protocol's."""
    if name not in PROTOCOLS:
        raise ValueError(f"env.protocol '{name}' is unknown; known: {sorted(PROTOCOLS)}")
    proto = PROTOCOLS[name]
    if extra_tags or system_prompt:
        import copy

        proto = copy.copy(proto)
        proto.tool_tags = {**proto.tool_tags, **(extra_tags or {})}
        proto.stop = [*proto.stop, *(close_tag(t) for t in extra_tags or {})]
        proto.system_prompt = system_prompt or proto.system_prompt
    return proto
