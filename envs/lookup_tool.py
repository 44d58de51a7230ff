"""The built-in `lookup` tool: exact lookup of a name in the demo's local fact table."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrl.data.synthetic import lookup_table
from agentrl.envs.tool import Observation, Tool, TrajectoryState, register_tool


@register_tool
class LookupTool(Tool):
    """Looks a name up in a local table; `latency_s` adds an artificial delay (tests, benchmarks)."""

    name = "lookup"

    def __init__(self, seed: int = 0, latency_s: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.table = lookup_table(seed)
        self.latency_s = latency_s
        self.backend = "local-table"

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        opts = dict(cfg.tools.options.get(cls.name, {})) if cfg is not None else {}
        return cls(seed=cfg.data.seed if cfg is not None else 0, **opts)

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        query = args["query"].strip().rstrip("?.").lower()
        if query in self.table:
            return Observation(f"{query}: {self.table[query]}")
        return Observation(f"No entry for '{query}'.")
