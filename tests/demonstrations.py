"""Checks shared by the tasks that write warm-start demonstrations (tests/test_toy.py, tests/test_facts.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


def assert_searches_replay(cfg: Any, sft: Path) -> None:
    """Every searching demonstration in `sft` shows, as its observation, what the configured text search
    returns for its query (the `mmsearch_r1` protocol's observation)."""
    from agentrl.envs.protocol import MMSEARCH_R1
    from agentrl.envs.text_search import TextSearchTool
    from agentrl.envs.tool import TrajectoryState
    from agentrl.grammar import TEXT_SEARCH, first_block

    tool = TextSearchTool.from_config(cfg)
    searches = [d for d in map(json.loads, sft.read_text().splitlines()) if len(d["turns"]) == 3]
    assert searches

    async def replay() -> None:
        for d in searches:
            query = first_block(d["turns"][0]["text"], TEXT_SEARCH)[1]
            obs = await tool.run(tool.parse_args(query), TrajectoryState(question=d["question"]))
            assert d["turns"][1]["text"] == MMSEARCH_R1.observation(obs.text, d["question"])
        await tool.close()

    asyncio.run(replay())
