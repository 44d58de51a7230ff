#!/usr/bin/env bash
# Sets up if needed, then runs the demo training job (configs/demo.yaml) on a local Ray cluster.
# The console shows the progress bar and agentrl's lines; add trainer.log_level=debug for the libraries' logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup.sh
exec .venv/bin/agentrl train configs/demo.yaml "$@"
