"""Injected tool faults (`faults.tool_error_rate`, `tool_timeout_rate`, `tool_hang_rate`): a wrapper that
makes a share of a tool's calls raise, time out at once, or never return, so tests and `agentrl bench
soak` show what the agent loop does with a flaky web API (an error observation, counted)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from agentrl.envs.tool import Tool, TrajectoryState
from agentrl.records import Observation

HANG_S = 24 * 3600.0  # "never returns": env.tool_timeout_s ends the call


class InjectedToolError(RuntimeError):
    """A tool failure that `faults.tool_error_rate` made up."""


class FaultInjectingTool(Tool):
    """`tool`, with a share of its calls failing as `faults.*` says; `stats` counts each kind injected
    next to the tool's own counters (`tool/<tool>/injected_errors`, ...)."""

    def __init__(self, tool: Tool, error_rate: float, timeout_rate: float, hang_rate: float, seed: int = 0) -> None:
        super().__init__()
        self.inner = tool
        self.name = tool.name  # type: ignore[misc]  # an instance takes its tool's name
        self.cacheable = tool.cacheable  # type: ignore[misc]
        self.backend = tool.backend
        self.rates = (error_rate, timeout_rate, hang_rate)
        self.rng = random.Random(seed)
        self.injected = {"injected_errors": 0, "injected_timeouts": 0, "injected_hangs": 0}

    @property
    def stats(self) -> dict[str, int]:
        return {**(getattr(self.inner, "stats", None) or {}), **self.injected}

    @property
    def stage_clock(self) -> Any:
        return getattr(self.inner, "stage_clock", None)

    def check(self) -> None:
        self.inner.check()

    async def close(self) -> None:
        await self.inner.close()

    def parse_args(self, action_text: str) -> dict[str, Any]:
        return self.inner.parse_args(action_text)

    def cache_identity(self, state: TrajectoryState) -> dict[str, Any]:
        return self.inner.cache_identity(state)

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        error, timeout, hang = self.rates
        r = self.rng.random()
        if r < error:
            self.injected["injected_errors"] += 1
            raise InjectedToolError(f"injected {self.name} error (faults.tool_error_rate)")
        if r < error + timeout:
            self.injected["injected_timeouts"] += 1
            raise TimeoutError
        if r < error + timeout + hang:
            self.injected["injected_hangs"] += 1
            await asyncio.sleep(HANG_S)
        return await self.inner.run(args, state)


def with_faults(tool: Tool, faults: Any, seed: int) -> Tool:
    """The tool wrapped when `faults` (a FaultsConfig) asks for tool faults, else the tool itself."""
    rates = (faults.tool_error_rate, faults.tool_timeout_rate, faults.tool_hang_rate)
    return FaultInjectingTool(tool, *rates, seed=seed) if any(rates) else tool
