"""The configuration reference, generated from the schema: every dotted key, its type, default and meaning.

The meaning of a key is the comment on its field in `agentrl/config/schema.py`: the comment lines directly
above the field, then the comment at the end of its line. `python -m agentrl.config.reference >
docs/configuration.md` writes the reference; tests/test_config_reference.py checks that the file matches.
Imports only the standard library and the schema.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
from dataclasses import dataclass
from typing import Any

from agentrl.config import schema

COMMAND = "python -m agentrl.config.reference > docs/configuration.md"


@dataclass(frozen=True)
class Key:
    """One leaf key of the configuration."""

    key: str  # dotted, e.g. "learner.lr"
    type: str  # the annotation as written in the schema
    default: str  # the default, as YAML/JSON writes it
    meaning: str  # the field's comment in the schema


@dataclass(frozen=True)
class Section:
    """One dataclass of the schema at its place in the tree (e.g. "tools.text_search.http")."""

    path: str
    doc: str  # the dataclass's docstring
    keys: tuple[Key, ...]


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line (without '#')."""
    return {tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}


def field_meanings(source: str | None = None) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment: the comment lines directly above it, then its trailing
    comment, joined into one line."""
    source = source if source is not None else inspect.getsource(schema)
    lines = source.splitlines()
    comments = _comments(source)
    meanings: dict[tuple[str, str], str] = {}
    for cls in (n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            line = stmt.lineno - 1  # 1-based number of the line above the field
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            trailing = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
            meanings[(cls.name, stmt.target.id)] = " ".join(t for t in above + trailing if t)
    return meanings


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _format(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def sections(root: type = schema.Config, path: str = "") -> list[Section]:
    """Every dataclass of the tree under `root`, parents before their nested sections, in field order."""
    meanings = field_meanings()
    out: list[Section] = []

    def walk(cls: type, prefix: str) -> None:
        keys, nested = [], []
        for f in dataclasses.fields(cls):
            value, key = _default(f), f"{prefix}.{f.name}" if prefix else f.name
            if dataclasses.is_dataclass(value):
                nested.append((type(value), key))
            else:
                keys.append(Key(key, str(f.type), _format(value), meanings.get((cls.__name__, f.name), "")))
        if keys:
            out.append(Section(prefix, inspect.cleandoc(cls.__doc__ or ""), tuple(keys)))
        for sub, key in nested:
            walk(sub, key)

    walk(root, path)
    return out


def keys(root: type = schema.Config) -> list[Key]:
    """Every leaf key under `root`, in the order of the reference."""
    return [k for s in sections(root) for k in s.keys]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return "`" + _cell(text) + "`"


def render() -> str:
    """docs/configuration.md: one table per section."""
    out = ["# Configuration reference", "",
           f"Generated from `agentrl/config/schema.py` by `{COMMAND}`; do not edit by hand",
           "(tests/test_config_reference.py fails when this file and the schema differ).", "",
           "Every key can be set in a YAML config file (`configs/*.yaml`, nested by section) or as a dotted",
           "override with a YAML value after the config on the command line:",
           "`agentrl train configs/demo.yaml learner.lr=1e-5 'env.tools=[lookup]' 'rollout.resources={gen: 1}'`.",
           "An unknown key fails with one line naming the closest valid key; bad values fail before any actor",
           "starts. Defaults are the schema's; a config file in `configs/` may set others.", ""]
    out += [f"- [`{s.path}`](#{s.path.replace('.', '')})" for s in sections()]
    for s in sections():
        out += ["", f"## {s.path}", "", s.doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| {_code(k.key)} | {_code(k.type)} | {_code(k.default)} | {_cell(k.meaning)} |" for k in s.keys]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
