#!/usr/bin/env bash
# The checks that need CUDA (tests/test_gpu.py: a bf16 learner on a GPU, its push to a GPU engine by each
# transport the GPUs allow — NCCL's collective needs two GPUs, tensor parallelism three — and the engine's
# log-probs against transformers afterwards), plus the GPU paths of the real-model and learner tests.
# About 8 minutes on one GPU after set-up. Prints what ran, what skipped and why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv
exec .venv/bin/pytest tests/test_gpu.py tests/test_learner_group.py tests/test_real_model.py -rs --durations=10 "$@"
