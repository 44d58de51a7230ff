#!/usr/bin/env bash
# Sets up if needed, then runs the demo training job (configs/demo.yaml) on a local Ray cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"
exec .venv/bin/agentrl train configs/demo.yaml "$@"
