"""docs/configuration.md is the reference generated from the schema, up to date, and every key has a meaning."""

import dataclasses

from agentrl.config import Config
from agentrl.config.reference import COMMAND, field_meanings, keys, render
from tests.conftest import ROOT


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a dataclass tree, found independently of the generator."""
    out = []
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
        key = f"{prefix}{f.name}"
        out += _leaf_keys(type(value), key + ".") if dataclasses.is_dataclass(value) else [key]
    return out


def test_the_committed_reference_is_the_generated_one():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == render(), f"docs/configuration.md is out of date with the schema: run `{COMMAND}`"


def test_every_leaf_key_has_its_type_default_and_a_meaning():
    leaves = _leaf_keys(Config)
    documented = {k.key: k for k in keys()}
    assert sorted(documented) == sorted(leaves)
    assert [k for k in leaves if not documented[k].meaning.strip()] == []
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert [k for k in leaves if f"| `{k}` |" not in doc] == []
    assert documented["learner.lr"].default == "1e-05" and documented["learner.lr"].type == "float"
    assert documented["model.vision.input_min_pixels"].default == str(512 * 512)


def test_meanings_come_from_the_comments_above_and_at_the_end_of_the_line():
    source = ("class A:\n"
              "    # first line\n"
              "    # second line\n"
              "    x: int = 1  # trailing\n"
              "\n"
              "    y: int = 2\n"
              "    z: str = '#'  # z's\n")
    meanings = field_meanings(source)
    assert meanings[("A", "x")] == "first line second line trailing"
    assert meanings[("A", "y")] == ""
    assert meanings[("A", "z")] == "z's"
