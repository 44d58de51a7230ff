"""YAML from users (config files, override values) read as plain data, with bounds.

- Booleans are YAML 1.2's `true`/`false` only: `on`, `off`, `yes`, `no` stay strings, so the documented
  values `tools.cache.mode=off` and `judge_cache: off` mean what they say.
- No aliases (a few hundred bytes of nested aliases expand to gigabytes), no duplicate keys (the later one
  would silently win), nesting at most `MAX_DEPTH` deep, no tags beyond YAML's plain types (safe loading).
- A file: a regular file of at most `MAX_FILE_BYTES`, UTF-8 text, a mapping at the top.

Every refusal is a `YamlRefused` whose message is one line naming the line of the input.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from agentrl.user_files import read_user_file

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64


class YamlRefused(ValueError):
    """Input that is not YAML this project reads (bad syntax included); one line."""


class YamlSyntaxError(YamlRefused):
    """Not YAML at all (an override value then stays the string it is)."""


def _mark(node_or_event: Any) -> str:
    return f"line {node_or_event.start_mark.line + 1}"


class _UserYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, no aliases, no duplicate keys and a depth bound."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise YamlRefused(f"{_mark(self.peek_event())}: YAML aliases (*name) are not read")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise YamlRefused(f"{_mark(self.peek_event())}: nested more than {MAX_DEPTH} deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise YamlRefused(f"{_mark(key_node)}: a key must be a plain value")
            if key in seen:
                raise YamlRefused(f"{_mark(key_node)}: duplicate key '{key}'")
            seen.add(key)
        return super().construct_mapping(node, deep)


_UserYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str) -> Any:
    """`text` as plain data; YamlRefused (one line) for anything refused or malformed."""
    try:
        return yaml.load(text, Loader=_UserYamlLoader)  # noqa: S506  a SafeLoader subclass
    except yaml.YAMLError as e:
        problem = str(getattr(e, "problem", "") or e).splitlines()[0]
        mark = getattr(e, "problem_mark", None)
        raise YamlSyntaxError(f"line {mark.line + 1}: {problem}" if mark else problem) from None
    except RecursionError:
        raise YamlRefused(f"nested more than {MAX_DEPTH} deep") from None


def read_yaml_file(path: str) -> dict[str, Any]:
    """A config file's mapping; YamlRefused naming what is wrong (not the path: the caller adds it)."""
    try:
        raw = read_user_file(path, MAX_FILE_BYTES)
    except (OSError, ValueError) as e:
        raise YamlRefused(str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlRefused(f"not UTF-8 text (byte {e.start})") from None
    data = parse_yaml(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlRefused(f"a config is a mapping of sections (trainer:, model:, ...), not a {type(data).__name__}")
    return data
