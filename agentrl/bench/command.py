"""`agentrl bench NAME`: the benchmarks, one module each (results in bench/, described in docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "async": ("agentrl.bench.async_bench", "asynchronous against synchronous training under slow tools"),
    "learning": ("agentrl.bench.learning", "SFT, then GRPO on the toy or facts task: does it learn when to search?"),
    "soak": ("agentrl.bench.soak", "a run under tool errors, actor kills and a driver kill + resume: lost groups"),
    "weights": ("agentrl.bench.weights", "seconds per weight push to a vLLM engine, by model size, against memcpy"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One subcommand per benchmark; each module declares its own arguments."""
    sub = parser.add_subparsers(dest="what", required=True, metavar="NAME")
    for name, (module, help_text) in BENCHES.items():
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return importlib.import_module(BENCHES[args.what][0]).run(args)
