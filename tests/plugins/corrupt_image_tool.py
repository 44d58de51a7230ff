"""A test tool: answers `<search><img></search>` like image_search, but its one image is corrupt."""

from __future__ import annotations

from typing import Any

from agentrl.envs.tool import IMAGE_MARKER, Observation, Tool, TrajectoryState


class CorruptImageSearch(Tool):
    name = "image_search"

    def parse_args(self, argument: str) -> dict[str, Any]:
        return {}

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        return Observation(f"1. image: {IMAGE_MARKER}\ntitle: a broken thumbnail",
                           images=[b"\x89PNG\r\n\x1a\n not really a png"])
