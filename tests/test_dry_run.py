"""`agentrl train CONFIG --dry-run`: every problem listed in one line each (exit 2), the placement plan and
the memory estimate printed, and nothing started."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agentrl.bench.processes import new_tag, tagged_env, tagged_processes
from agentrl.config import load_config
from agentrl.training.dry_run import Cluster, count_parameters, dry_run
from tests.conftest import ROOT, agentrl_cmd

# Qwen2.5-VL-7B-Instruct's config.json (the numbers that size it)
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "hidden_size": 3584, "intermediate_size": 18944,
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "tie_word_embeddings": False,
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
}


def dry(*args: str, env: dict | None = None, tag: str = "") -> subprocess.CompletedProcess:
    """`agentrl train --dry-run`; whatever it started would carry `tag` (agentrl/bench/processes.py)."""
    env = tagged_env(tag or new_tag(), {**os.environ, "RAY_ADDRESS": "", **(env or {})})
    return subprocess.run([*agentrl_cmd(), "train", *args, "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def qwen7b(tmp_path: Path) -> Path:
    folder = tmp_path / "Qwen2.5-VL-7B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN25_VL_7B))
    return folder


def test_the_demo_dry_run_prints_the_plan_and_starts_nothing():
    tag = new_tag()
    r = dry("configs/demo.yaml", tag=tag)
    assert r.returncode == 0, r.stderr
    assert "learner rank 0: node 0, CPU" in r.stdout and "generator 0: node 0" in r.stdout
    assert "0 problem(s); nothing was started" in r.stdout
    assert tagged_processes(tag) == set()


def test_a_missing_model_folder_and_data_file_are_each_listed(tmp_path):
    r = dry("configs/demo.yaml", f"model.path={tmp_path}/no-model", f"data.source={tmp_path}/no.parquet")
    assert r.returncode == 2
    problems = r.stderr.strip().splitlines()
    assert problems == [f"agentrl: bad value for 'model.path': '{tmp_path}/no-model' does not exist",
                        f"agentrl: bad value for 'data.source': '{tmp_path}/no.parquet' does not exist"]
    assert "2 problem(s)" in r.stdout


def test_the_7b_parameter_count_and_which_zero_stage_fits():
    assert count_parameters(QWEN25_VL_7B) == pytest.approx(8.29e9, rel=0.01)  # Qwen2.5-VL-7B: 8.29B


def test_zero3_over_four_ranks_fits_an_80_gib_gpu_and_zero0_on_one_does_not(qwen7b):
    eight = Cluster([8], 80.0, "one 8-GPU node")
    fits = dry_run(load_config("configs/mmsearch_r1_7b.yaml", [f"model.path={qwen7b}"], check=False), eight)
    assert fits.warnings == []
    assert any(line.startswith("memory (80 GiB per GPU): model 8.29B") for line in fits.lines)
    # the log-probs' working set is one chunk of logits (0.2 GiB), not 16k positions x 152k vocabulary in fp32
    [learner] = [line for line in fits.lines if line.strip().startswith("learner GPU")]
    assert "logits 0.2 =" in learner
    assert [line.split(":")[0] for line in fits.lines if line.startswith(("learner rank", "generator"))] == \
        [f"learner rank {r}" for r in range(4)] + [f"generator {e}" for e in range(4)]
    alone = dry_run(load_config("configs/mmsearch_r1_7b.yaml", [f"model.path={qwen7b}", "learner.num_ranks=1",
                                                                "learner.zero_stage=0"], check=False), eight)
    assert len(alone.warnings) == 1 and alone.warnings[0].startswith("learner ranks do not fit")
    short = dry_run(load_config("configs/mmsearch_r1_7b.yaml", [f"model.path={qwen7b}"], check=False),
                    Cluster([4], 80.0, "one 4-GPU node"))
    assert "generator 0 cannot be placed" in "\n".join(short.problems)


def test_the_7b_recipe_lists_its_missing_data_cache_and_keys_without_showing_a_key(qwen7b):
    secret = "sk-dry-run-SECRET"
    r = dry("configs/mmsearch_r1_7b.yaml", f"model.path={qwen7b}", "--nodes", "1", "--gpus-per-node", "8",
            env={"SERPAPI_API_KEY": "", "JINA_API_KEY": "", "OPENAI_API_KEY": secret})
    assert r.returncode == 2
    problems = r.stderr.strip().splitlines()
    assert "agentrl: tools.text_search.backend: SERPAPI_API_KEY is not set in the environment" in problems
    assert "agentrl: tools.text_search.reader: JINA_API_KEY is not set in the environment" in problems
    assert any("tools.image_search.cache_dir" in p for p in problems)
    assert any("'data.source'" in p for p in problems)
    assert secret not in r.stdout + r.stderr
    assert "learner rank 3: node 0, GPU [3]" in r.stdout
