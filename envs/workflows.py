"""Evaluation workflows (the seed's baselines and the policy's own behaviour), as variants of a rollout
context, so they run through the same agent loop, generator and tools as training.

- `direct`: no tools; the model is told to answer at once (one turn).
- `rag`: the seed's fixed baseline: an image search (when `image_search` is configured), then the model
  writes a text query, a text search, then the answer. The turns are scripted with per-turn regex
  constraints (structured outputs), so every item makes exactly these searches. The reason and the query
  are printable ASCII capped at `max_tokens_per_turn // 4` characters each, and the turn's token budget is
  raised to the longest text the pattern allows (an ASCII character is at most one token), so a
  constrained turn always completes.
  The turns' regexes and `check_workflow` are part of the action grammar (`agentrl.grammar`).
- `on_demand`: the configured protocol and tools; the policy decides whether and how to search.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from agentrl.grammar import (
    DIRECT_PROMPT,
    IMAGE_SEARCH_TOOL,
    WORKFLOWS,
    check_workflow,
    rag_turn_regex,
    rag_turn_tokens,
)

if TYPE_CHECKING:  # the agent loop (numpy, the tokenizer glue) loads where rollouts run, not in every CLI command
    from agentrl.envs.agent_loop import RolloutContext


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
        image = IMAGE_SEARCH_TOOL in ctx.tools
        turns = rag_turn_regex(ctx.protocol.name, ctx.env.max_tokens_per_turn, image)
        env = dataclasses.replace(ctx.env, max_turns=len(turns), max_image_searches=int(image), max_text_searches=1,
                                  turn_regex=turns,
                                  max_tokens_per_turn=budget, max_total_tokens=max(ctx.env.max_total_tokens, budget))
        return dataclasses.replace(ctx, env=env, sampling=dataclasses.replace(sampling, max_tokens=budget))
    raise ValueError(f"--workflow: '{workflow}' is not one of {', '.join(WORKFLOWS)}")
