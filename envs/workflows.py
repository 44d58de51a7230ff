"""Evaluation workflows (the seed's baselines and the policy's own behaviour), as variants of a rollout
context, so they run through the same agent loop, generator and tools as training.

- `direct`: no tools; the model is told to answer at once (one turn).
- `rag`: the seed's fixed baseline: an image search, then the model writes a text query, a text search,
  then the answer. The three turns are scripted with per-turn regex constraints (structured outputs), so
  every item makes exactly these two searches. The reason and the query are printable ASCII capped at
  `max_tokens_per_turn // 4` characters each, and the turn's token budget is raised to the longest text the
  pattern allows (an ASCII character is at most one token), so a constrained turn always completes.
- `on_demand`: the configured protocol and tools; the policy decides whether and how to search.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from agentrl.envs.protocol import IMAGE_SEARCH_TOOL, TEXT_SEARCH_TOOL

if TYPE_CHECKING:  # the agent loop (numpy, the tokenizer glue) loads where rollouts run, not in every CLI command
    from agentrl.envs.agent_loop import RolloutContext

WORKFLOWS = ("direct", "rag", "on_demand")

DIRECT_PROMPT = (
    "Answer the user's question directly, without searching. First think about it inside <reason> and "
    "</reason>, then write the short final answer inside <answer> and </answer>."
)


def rag_field_chars(max_tokens_per_turn: int) -> int:
    """How many characters the reason, the query and the answer of a scripted rag turn may have."""
    return max(8, max_tokens_per_turn // 4)


def rag_turn_tokens(max_tokens_per_turn: int) -> int:
    """A token budget no scripted rag turn can exceed: its longest match, one token per character."""
    return max(max_tokens_per_turn, len("<reason></reason><text_search></text_search>")
               + 2 * rag_field_chars(max_tokens_per_turn))


def rag_turn_regex(protocol: str, max_tokens_per_turn: int) -> list[str]:
    """The three scripted turns of the `rag` workflow, as regexes in the protocol's action tags."""
    c = rag_field_chars(max_tokens_per_turn)
    reason = f"<reason>[ -;=-~]{{0,{c}}}</reason>"  # printable ASCII but '<'
    text = f"[!-;=-~][ -;=-~]{{0,{c - 1}}}"
    if protocol == "mmsearch_r1":
        return [f"{reason}<search><img></search>", f"{reason}<text_search>{text}</text_search>",
                f"{reason}<answer>{text}</answer>"]
    if protocol == "react":
        return [f"{reason}<search>image</search>", f"{reason}<search>{text}</search>",
                f"{reason}<answer>{text}</answer>"]
    raise ValueError(f"--workflow rag: env.protocol '{protocol}' has no image and text search actions "
                     "(use mmsearch_r1 or react)")


def check_workflow(workflow: str, protocol: str, tools: list[str]) -> None:
    """ValueError (one line) when `workflow` is unknown or cannot run with this protocol and these tools."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"--workflow: '{workflow}' is not one of {', '.join(WORKFLOWS)}")
    if workflow == "rag":  # needs both search tools and a protocol with their actions
        rag_turn_regex(protocol, 0)
        missing = [t for t in (IMAGE_SEARCH_TOOL, TEXT_SEARCH_TOOL) if t not in tools]
        if missing:
            raise ValueError(f"--workflow rag: env.tools lacks {', '.join(missing)}")


def workflow_context(ctx: RolloutContext, workflow: str, temperature: float | None = None) -> RolloutContext:
    """The rollout context of one workflow; `temperature` overrides sampling (0: greedy)."""
    sampling = ctx.sampling if temperature is None else dataclasses.replace(ctx.sampling, temperature=temperature)
    if workflow == "on_demand":
        return dataclasses.replace(ctx, sampling=sampling)
    if workflow == "direct":
        # a protocol without tools (reasoning) keeps its own prompt
        protocol = dataclasses.replace(ctx.protocol, system_prompt=DIRECT_PROMPT) if ctx.tools else ctx.protocol
        env = dataclasses.replace(ctx.env, max_turns=1, turn_regex=[])
        return dataclasses.replace(ctx, protocol=protocol, tools={}, env=env, sampling=sampling)
    if workflow == "rag":
        check_workflow(workflow, ctx.protocol.name, list(ctx.tools))
        budget = rag_turn_tokens(ctx.env.max_tokens_per_turn)
        env = dataclasses.replace(ctx.env, max_turns=3, max_image_searches=1, max_text_searches=1,
                                  turn_regex=rag_turn_regex(ctx.protocol.name, ctx.env.max_tokens_per_turn),
                                  max_tokens_per_turn=budget, max_total_tokens=max(ctx.env.max_total_tokens, budget))
        return dataclasses.replace(ctx, env=env, sampling=dataclasses.replace(sampling, max_tokens=budget))
    raise ValueError(f"--workflow: '{workflow}' is not one of {', '.join(WORKFLOWS)}")
