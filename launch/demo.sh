#!/usr/bin/env bash
# Sets up if needed, then runs the demo: GRPO on a small toy knowledge task (agentrl make-toy, 8 entities)
# from a warm start (SFT on the task's demonstrations, built on first use and cached), on a local Ray
# cluster; the reward rises over the run (docs/benchmarks.md#demo). configs/learn_toy.yaml is the full-size task; configs/demo.yaml
# the machinery-only demo (lookup tool, untrained model). Extra arguments are config overrides.
# The console shows the progress bar and agentrl's lines; add trainer.log_level=debug for the libraries' logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
TOY=runs/demo_toy
.venv/bin/agentrl make-toy --out "$TOY" --entities 8 --fillers 120 --train-unknown 100
exec .venv/bin/agentrl train configs/learn_toy.yaml \
  data.source=$TOY/train.parquet tools.text_search.corpus=$TOY/corpus.jsonl sft.data=$TOY/sft.jsonl \
  trainer.eval_data=$TOY/heldout.parquet trainer.eval_every=50 trainer.total_steps=100 learner.lr=3e-4 sft.epochs=20 \
  trainer.run_name=demo "$@"
