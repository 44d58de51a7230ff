#!/usr/bin/env bash
# Checks the import contracts of pyproject.toml ([tool.importlinter]) on the tree as it installs:
# actors/ and envs/ become agentrl/actors and agentrl/envs (setup.py's package_dir), which lint-imports
# cannot see in the source tree, so the installed layout is copied into build/layout first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build/layout"
rm -rf "$OUT" && mkdir -p "$OUT"
cp -r "$ROOT/agentrl" "$OUT/agentrl"
cp -r "$ROOT/actors" "$OUT/agentrl/actors"
cp -r "$ROOT/envs" "$OUT/agentrl/envs"
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
cd "$OUT"
exec "$ROOT/.venv/bin/lint-imports" --config "$ROOT/pyproject.toml" --no-cache
