"""Placeholder: the `agentrl balanced` command is being written (see the open issues)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("rest", nargs="*")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    print("agentrl: not implemented yet", file=sys.stderr)
    return 2
