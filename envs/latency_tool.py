"""The `latency` tool: the demo's lookup answer after a heavy-tailed delay, sometimes failing.

It stands in for a web search in benchmarks: the delay is drawn from a log-normal distribution given
by its median and 99th percentile (`agentrl bench async` defaults: 1 s and 10 s, as web calls go), a
share of calls fail, and the observation can be padded to the length of a page of search results.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from agentrl.data.synthetic import COLOURS, lookup_table
from agentrl.envs.tool import Observation, Tool, TrajectoryState, register_tool

Z99 = 2.3263478740408408  # the standard normal's 99th percentile


def lognormal_params(median_s: float, p99_s: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal with this median and 99th percentile."""
    if median_s <= 0:
        return -math.inf, 0.0
    if p99_s < median_s:
        raise ValueError(f"tool latency p99 ({p99_s}) is below its median ({median_s})")
    return math.log(median_s), math.log(p99_s / median_s) / Z99


class LatencyModel:
    """Draws call latencies (seconds) and failures; seeded, so two runs see the same sequence."""

    def __init__(self, median_s: float = 1.0, p99_s: float = 10.0, failure_rate: float = 0.0,
                 seed: int = 0) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"tool failure_rate must be in [0, 1], got {failure_rate}")
        self.mu, self.sigma = lognormal_params(median_s, p99_s)
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)

    def draw(self) -> tuple[float, bool]:
        """One call: (latency in seconds, whether it fails)."""
        latency = 0.0 if self.mu == -math.inf else self.rng.lognormvariate(self.mu, self.sigma)
        return latency, self.rng.random() < self.failure_rate


@register_tool
class LatencyTool(Tool):
    """Answers from the demo's fact table after a log-normal delay; fails at `failure_rate` (benchmarks)."""

    name = "latency"

    def __init__(self, median_s: float = 1.0, p99_s: float = 10.0, failure_rate: float = 0.0, seed: int = 0,
                 filler_words: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.model = LatencyModel(median_s, p99_s, failure_rate, seed)
        self.table = lookup_table(seed)
        self.backend = "latency-sim"
        # a fixed page of filler: long observations, as real search results are (learner work per sample)
        self.filler = " ".join(COLOURS[i % len(COLOURS)] for i in range(filler_words))

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        opts = dict(cfg.tools.options.get(cls.name, {})) if cfg is not None else {}
        opts.setdefault("seed", cfg.data.seed if cfg is not None else 0)
        return cls(**opts)

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        latency, fails = self.model.draw()
        await asyncio.sleep(latency)
        if fails:
            raise RuntimeError("injected tool failure")
        query = args["query"].strip().rstrip("?.").lower()
        answer = f"{query}: {self.table[query]}" if query in self.table else f"No entry for '{query}'."
        return Observation(f"{answer} {self.filler}".strip())
