"""The layout as a specification: one installed top-level package, one-way dependencies (the import
contracts in pyproject.toml), no private names across modules, small files and functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("agentrl", "actors", "envs")
TESTS = ("tests",)  # held to the same size rules: a test is read as a specification
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def _python_files(folders: tuple[str, ...] = SOURCES) -> list[Path]:
    return sorted(p for d in folders for p in (ROOT / d).rglob("*.py"))


def test_the_project_installs_one_top_level_package(tmp_path):
    code = ("import importlib, json\n"
            "found = {}\n"
            "for name in ('envs', 'actors', 'agentrl.envs', 'agentrl.actors', 'agentrl.envs.tool'):\n"
            "    try:\n"
            "        importlib.import_module(name); found[name] = True\n"
            "    except ImportError:\n"
            "        found[name] = False\n"
            "print(json.dumps(found))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ('{"envs": false, "actors": false, "agentrl.envs": true, "agentrl.actors": true, '
                                  '"agentrl.envs.tool": true}')


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentrl"):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []


def test_files_and_functions_stay_small():
    too_long = []
    for path in _python_files(SOURCES + TESTS):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert too_long == []
