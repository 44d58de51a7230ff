"""Evaluation workflows (the seed's baselines and the policy's own behaviour), as variants of a rollout
context, so they run through the same agent loop, generator and tools as training.

- `direct`: no tools; the model is told to answer at once (one turn).
- `rag`: the seed's fixed baseline: an image search, then the model writes a text query, a text search,
  then the answer. The three turns are scripted with per-turn regex constraints (structured outputs), so
  every item makes exactly these two searches; the reason and the query are capped at
  `max_tokens_per_turn // 4` characters each, so a constrained turn always ends within its token budget.
- `on_demand`: the configured protocol and tools; the policy decides whether and how to search.
"""

from __future__ import annotations

import copy
import dataclasses

from envs.agent_loop import RolloutContext
from envs.protocol import IMAGE_SEARCH_TOOL, TEXT_SEARCH_TOOL

WORKFLOWS = ("direct", "rag", "on_demand")

DIRECT_PROMPT = (
    "Answer the user's question directly, without searching. First think about it inside <reason> and "
    "</reason>, then write the short final answer inside <answer> and </answer>."
)


def rag_turn_regex(protocol: str, max_tokens_per_turn: int) -> list[str]:
    """The three scripted turns of the `rag` workflow, as regexes in the protocol's action tags."""
    c = max(8, max_tokens_per_turn // 4)
    reason = f"<reason>[^<]{{0,{c}}}</reason>"
    text = f"[^<\\s][^<]{{0,{c - 1}}}"
    if protocol == "mmsearch_r1":
        return [f"{reason}<search><img></search>", f"{reason}<text_search>{text}</text_search>",
                f"{reason}<answer>{text}</answer>"]
    if protocol == "react":
        return [f"{reason}<search>image</search>", f"{reason}<search>{text}</search>",
                f"{reason}<answer>{text}</answer>"]
    raise ValueError(f"--workflow rag: env.protocol '{protocol}' has no image and text search actions "
                     "(use mmsearch_r1 or react)")


def workflow_context(ctx: RolloutContext, workflow: str, temperature: float | None = None) -> RolloutContext:
    """The rollout context of one workflow; `temperature` overrides sampling (0: greedy)."""
    sampling = ctx.sampling if temperature is None else dataclasses.replace(ctx.sampling, temperature=temperature)
    if workflow == "on_demand":
        return dataclasses.replace(ctx, sampling=sampling)
    if workflow == "direct":
        protocol = copy.copy(ctx.protocol)
        if ctx.tools:  # a protocol without tools (reasoning) keeps its own prompt
            protocol.system_prompt = DIRECT_PROMPT
        env = dataclasses.replace(ctx.env, max_turns=1, turn_regex=[])
        return dataclasses.replace(ctx, protocol=protocol, tools={}, env=env, sampling=sampling)
    if workflow == "rag":
        missing = [t for t in (IMAGE_SEARCH_TOOL, TEXT_SEARCH_TOOL) if t not in ctx.tools]
        if missing:
            raise ValueError(f"--workflow rag: env.tools lacks {', '.join(missing)}")
        env = dataclasses.replace(ctx.env, max_turns=3, max_image_searches=1, max_text_searches=1,
                                  turn_regex=rag_turn_regex(ctx.protocol.name, ctx.env.max_tokens_per_turn))
        return dataclasses.replace(ctx, env=env, sampling=sampling)
    raise ValueError(f"--workflow: '{workflow}' is not one of {', '.join(WORKFLOWS)}")
