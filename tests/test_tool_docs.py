"""docs/tools.md's example is complete and works: extracted, imported by path, called."""

import asyncio
import re
import sys

from agentrl.config import load_config
from agentrl.envs.agent_loop import call_tool
from agentrl.envs.protocol import get_protocol
from agentrl.envs.registry import TOOL_REGISTRY, load_tool
from agentrl.envs.tool import TrajectoryState
from tests.conftest import ROOT


def test_the_documented_example_runs(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "tools.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(code.strip().splitlines()) <= 40
    (tmp_path / "mytools.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mytools", None)
    cfg = load_config("configs/demo.yaml",
                      ["env.tools=[lookup, mytools:Calculator]", "env.tool_tags={calc: calculator}"])
    calc = load_tool("mytools:Calculator", cfg)
    protocol = get_protocol(cfg.env.protocol, dict(cfg.env.tool_tags))
    action = protocol.parse("<reason>r</reason><calc>3 * (2 + 4)</calc>")
    assert (action.tool, action.argument) == ("calculator", "3 * (2 + 4)")
    obs, call = asyncio.run(call_tool(calc, action.argument, TrajectoryState("q"), 5))
    assert obs.text == "3 * (2 + 4) = 18" and call.ok
    bad, call = asyncio.run(call_tool(calc, "__import__('os')", TrajectoryState("q"), 5))
    assert not call.ok  # an exception in a tool is an error observation
    assert "km_to_miles" in TOOL_REGISTRY
    obs = asyncio.run(TOOL_REGISTRY["km_to_miles"]().run({"query": "10"}, TrajectoryState("q")))
    assert obs.text == "6.21 miles"
