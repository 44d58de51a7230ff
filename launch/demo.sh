#!/usr/bin/env bash
# Sets up if needed, then runs the demo: GRPO on a small toy knowledge task (agentrl make-toy, 8 entities)
# from a warm start (SFT on the task's demonstrations, built on first use and cached), on a local Ray
# cluster; the reward rises over the run (docs/benchmarks.md#demo) and it ends with the held-out table of its
# first and last evals. configs/learn_toy.yaml is the full-size task; configs/demo.yaml the machinery-only
# demo (lookup tool, untrained model). Extra arguments are config overrides.
# The console shows the progress bar and agentrl's lines; add trainer.log_level=debug for the libraries' logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
TOY=runs/demo_toy
.venv/bin/agentrl make-toy --out "$TOY" --entities 8 --fillers 120
.venv/bin/agentrl train configs/learn_toy.yaml \
  data.source=$TOY/train.parquet tools.text_search.corpus=$TOY/corpus.jsonl sft.data=$TOY/sft.jsonl \
  trainer.eval_data=$TOY/heldout.parquet trainer.eval_every=50 trainer.total_steps=100 learner.lr=3e-4 sft.epochs=20 \
  trainer.run_name=demo "$@"
echo "[agentrl] a pretrained model that knows some facts (SmolLM2-135M) learning when to search:"
echo "[agentrl]   .venv/bin/agentrl bench learning --task facts --model smollm2-135m   (about 50 min; docs/benchmarks.md#learning-smollm2)"
