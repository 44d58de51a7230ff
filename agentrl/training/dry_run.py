"""`agentrl train CONFIG --dry-run`: check a run and print its plan without starting an actor.

It lists every problem it finds (config values, the model folder, data, tools, reward, keys), one line
each; prints where each actor would go (learner ranks, engines, environment and reward actors: node and
GPUs) on the cluster at RAY_ADDRESS (its nodes are read, nothing is started) or on this machine, or on a
cluster described with `--nodes N --gpus-per-node G`; and, where the model's `config.json` is readable,
estimates each GPU's memory (weights, gradients, optimizer states by ZeRO stage and offload, the engines'
KV cache share), warning when a GPU would not hold it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from agentrl.config import Config, config_problems
from agentrl.errors import UserError
from agentrl.logprobs import LOGIT_CHUNK_BYTES

GIB = 2**30
ASSUMED_GPU_GIB = 80.0  # an 80 GiB GPU (A100/H100) when nothing says otherwise
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Cluster:
    """Nodes as the plan sees them: GPUs per node and each GPU's memory."""

    gpus: list[int]
    gpu_gib: float
    source: str  # where these numbers come from (said in the output)
    assumed_memory: bool = False


@dataclass
class Plan:
    """Where every actor goes, the memory per GPU, and what is wrong."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def describe_cluster(nodes: int = 0, gpus_per_node: int = -1, gpu_gib: float = 0.0) -> Cluster:
    """The cluster to plan onto: as described, else RAY_ADDRESS's nodes (read only), else this machine."""
    if nodes > 0:
        gpus = max(gpus_per_node, 0)
        return Cluster([gpus] * nodes, gpu_gib or ASSUMED_GPU_GIB, f"{nodes} node(s) x {gpus} GPU(s) as given",
                       assumed_memory=not gpu_gib)
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
        try:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            gpus = [int(n["Resources"].get("GPU", 0)) for n in alive]
        finally:
            ray.shutdown()
        return Cluster(gpus, gpu_gib or ASSUMED_GPU_GIB, f"the Ray cluster at RAY_ADDRESS ({len(gpus)} nodes)",
                       assumed_memory=not gpu_gib)
    import torch

    count = torch.cuda.device_count()
    memory = torch.cuda.get_device_properties(0).total_memory / GIB if count else 0.0
    return Cluster([count], gpu_gib or memory or ASSUMED_GPU_GIB, "this machine",
                   assumed_memory=not (gpu_gib or memory))


def _place(cluster: Cluster, need: float, free: list[float], prefer: int | None = None) -> tuple[int, list[int]]:
    """The first node (`prefer` first) with `need` GPUs free: (node, GPU indices); (-1, []) if none."""
    order = ([prefer] if prefer is not None else []) + [i for i in range(len(free)) if i != prefer]
    for i in order:
        if i < len(free) and free[i] >= need - 1e-9:
            first = cluster.gpus[i] - math.ceil(free[i])
            free[i] -= need
            return i, list(range(first, first + math.ceil(need)))
    return -1, []


def plan_placement(cfg: Config, cluster: Cluster, plan: Plan) -> None:
    """Learner ranks first (`learner.ranks_per_node` to a node), then the engines, by GPUs."""
    lc, r = cfg.learner, cfg.rollout
    free = [float(g) for g in cluster.gpus]
    per = lc.ranks_per_node or lc.num_ranks
    for rank in range(lc.num_ranks):
        node, gpus = _place(cluster, lc.num_gpus, free, prefer=None if not lc.ranks_per_node else rank // per)
        where = f"node {node}, GPU {gpus}" if lc.num_gpus else f"node {max(node, 0)}, CPU"
        if node < 0:
            plan.problems.append(f"learner rank {rank} cannot be placed: it needs {lc.num_gpus} GPU(s) "
                                 f"(learner.num_gpus) and {cluster.source} has too few free")
            where = "unplaced"
        plan.lines.append(f"learner rank {rank}: {where} (ZeRO-{lc.zero_stage}, offload {lc.offload})")
    engine_gpus = r.num_gpus_per_engine * r.tensor_parallel_size if r.num_gpus_per_engine else 0
    for e in range(r.num_engines):
        node, gpus = _place(cluster, engine_gpus, free)
        where = f"node {node}, GPU {gpus}" if engine_gpus else f"node {max(node, 0)}, CPU"
        if node < 0:
            plan.problems.append(f"generator {e} cannot be placed: it needs {engine_gpus} GPU(s) "
                                 f"(rollout.num_gpus_per_engine x rollout.tensor_parallel_size) and "
                                 f"{cluster.source} has too few free")
            where = "unplaced"
        plan.lines.append(f"generator {e}: {where} (tensor parallel {r.tensor_parallel_size})")
    plan.lines.append(f"environment actors: {cfg.env.num_actors}, reward actors: {cfg.reward.num_actors} "
                      "(no GPU; placed by env.resources / anywhere)")


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of a Qwen2-style decoder (and a Qwen2-VL / 2.5-VL vision tower) from its config.json."""
    text = config.get("text_config", config)
    h, layers, inter = text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]
    heads = text["num_attention_heads"]
    kv = text.get("num_key_value_heads", heads)
    head_dim = text.get("head_dim", h // heads)
    vocab = text.get("vocab_size", config.get("vocab_size"))
    attention = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h + (heads + 2 * kv) * head_dim
    per_layer = attention + 3 * h * inter + 2 * h
    tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    total = vocab * h * (1 if tied else 2) + layers * per_layer + h
    vision = config.get("vision_config")
    if vision:
        vh, depth = vision.get("hidden_size", vision.get("embed_dim")), vision["depth"]
        vi = vision.get("intermediate_size", 4 * vh)
        mlp = 3 * vh * vi if "intermediate_size" in vision else 2 * vh * vi  # 2.5-VL's gated MLP
        patch = vision.get("in_chans", vision.get("in_channels", 3)) * vision.get("temporal_patch_size", 2) * \
            vision.get("patch_size", 14) ** 2 * vh
        merged = vh * vision.get("spatial_merge_size", 2) ** 2
        out = vision.get("out_hidden_size", vision.get("hidden_size", h))
        total += patch + depth * (4 * vh * vh + mlp + 4 * vh) + merged * merged + merged * out
    return int(total)


def learner_gpu_gib(params: int, cfg: Config, vocab: int = 0) -> dict[str, float]:
    """GiB per learner GPU by kind: weights, gradients (fp32 accumulation under bf16), Adam states (fp32
    master weights and two moments under bf16, two moments under fp32), by ZeRO stage and offload; and the
    log-probs' working set: about three fp32 copies of one chunk's logits (`token_logprobs`), never of
    all `learner.micro_batch_tokens` positions at once."""
    lc, n = cfg.learner, cfg.learner.num_ranks
    b = DTYPE_BYTES.get(cfg.model.dtype, 4)
    weights = params * b / (n if lc.zero_stage == 3 else 1) * (0 if lc.offload == "all" else 1)
    grads = params * 4 / (n if lc.zero_stage >= 2 else 1)
    optimizer = params * (12 if b == 2 else 8) / (n if lc.zero_stage >= 1 else 1) * (lc.offload == "none")
    logits = 3 * min(LOGIT_CHUNK_BYTES, lc.micro_batch_tokens * vocab * 4)
    return {"weights": weights / GIB, "gradients": grads / GIB, "optimizer": optimizer / GIB, "logits": logits / GIB}


def plan_memory(cfg: Config, cluster: Cluster, plan: Plan) -> None:
    """The per-GPU memory estimate, where the model's config.json is readable (a built-in name such as
    `tiny-text` or `smollm2-135m` is resolved to its folder: built or imported once, as a run would)."""
    from agentrl.models.tiny import ensure_model

    path = os.path.join(ensure_model(cfg.model.path, cfg.model.cache_dir), "config.json")
    if not os.path.isfile(path):
        plan.lines.append(f"memory: no estimate ({path} is not readable)")
        return
    with open(path) as f:
        config = json.load(f)
    params = count_parameters(config)
    gpu = f"{cluster.gpu_gib:.0f} GiB per GPU" + (" (assumed)" if cluster.assumed_memory else "")
    plan.lines.append(f"memory ({gpu}): model {params / 1e9:.2f}B parameters in {cfg.model.dtype}")
    parts = learner_gpu_gib(params, cfg, config.get("text_config", config).get("vocab_size", 0))
    total = sum(parts.values())
    plan.lines.append("  learner GPU: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) +
                      f" = {total:.1f} GiB, plus activations")
    if cfg.learner.num_gpus and total > cluster.gpu_gib * cfg.learner.num_gpus:
        plan.warnings.append(f"learner ranks do not fit: {total:.1f} GiB each > {cluster.gpu_gib:.0f} GiB per GPU "
                             "(raise learner.num_ranks or learner.zero_stage, or set learner.offload)")
    r = cfg.rollout
    weights = params * DTYPE_BYTES.get(cfg.model.dtype, 4) / r.tensor_parallel_size / GIB
    budget = r.gpu_memory_utilization * cluster.gpu_gib
    plan.lines.append(f"  engine GPU: weights {weights:.1f} GiB of a {budget:.1f} GiB budget "
                      f"(rollout.gpu_memory_utilization), KV cache {max(budget - weights, 0):.1f} GiB")
    if r.num_gpus_per_engine and weights >= budget:
        plan.warnings.append(f"engines do not fit: weights {weights:.1f} GiB >= {budget:.1f} GiB budget "
                             "(raise rollout.tensor_parallel_size or rollout.gpu_memory_utilization)")


def environment_problems(cfg: Config) -> list[str]:
    """Reward, tools, tool cache and the first data row, each checked on its own (all problems listed)."""
    from agentrl.data.prompts import PromptStream
    from agentrl.envs.registry import load_tool
    from agentrl.rewards import check_reward_options, get_reward_fn
    from agentrl.web.cache import open_tool_cache

    checks: list[tuple[str, Any]] = [("reward", lambda: check_reward_options(get_reward_fn(cfg.reward.name),
                                                                              cfg.reward.options))]
    checks += [(f"tool {spec}", lambda spec=spec: load_tool(spec, cfg).check()) for spec in cfg.env.tools]
    checks.append(("tool cache", lambda: (c := open_tool_cache(cfg.tools.cache)) and c.close()))
    if os.path.exists(cfg.data.source):
        checks.append(("data", lambda: next(iter(PromptStream(cfg.data.source, shuffle=False,
                                                              on_bad_row=cfg.data.on_bad_row)))))
    problems = []
    for what, check in checks:
        try:
            check()
        except (UserError, ValueError, OSError, KeyError, StopIteration) as e:
            problems.append(f"{what}: {e}" if str(e) else f"{what}: {type(e).__name__}")
    return problems


def key_problems(cfg: Config) -> list[str]:
    """API keys the configured backends read from the environment (named, never shown) and the folders
    they read; what the tools themselves only find at their first call."""
    tools, t = set(cfg.env.tools), cfg.tools
    needed: list[tuple[bool, str, str]] = []  # (needed, environment variable, the setting that needs it)
    if "image_search" in tools:
        needed.append((t.image_search.backend == "serpapi_lens", "SERPAPI_API_KEY", "tools.image_search.backend"))
    if "text_search" in tools:
        needed += [(t.text_search.backend == "serpapi", "SERPAPI_API_KEY", "tools.text_search.backend"),
                   (t.text_search.reader == "jina", "JINA_API_KEY", "tools.text_search.reader")]
    problems = [f"{key}: {var} is not set in the environment" for need, var, key in needed
                if need and not os.environ.get(var)]
    if "image_search" in tools and t.image_search.backend == "cache" and not os.path.isdir(t.image_search.cache_dir):
        problems.append(f"tools.image_search.cache_dir: '{t.image_search.cache_dir}' is not a folder")
    if "text_search" in tools and t.text_search.summariser == "openai" and not t.text_search.summariser_url:
        problems.append("tools.text_search.summariser_url: empty (the summariser is 'openai')")
    return sorted(set(problems))


def dry_run(cfg: Config, cluster: Cluster) -> Plan:
    """Every problem of the run and its plan; starts nothing."""
    plan = Plan(problems=config_problems(cfg) + environment_problems(cfg) + key_problems(cfg))
    plan.lines.append(f"cluster: {cluster.source}: {len(cluster.gpus)} node(s), GPUs per node {cluster.gpus}")
    plan_placement(cfg, cluster, plan)
    plan_memory(cfg, cluster, plan)
    return plan
