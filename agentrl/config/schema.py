"""The configuration schema: every key a user can set is a field below (`agentrl.config.loading` reads
YAML files and overrides into it and checks the values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SYNTHETIC_SOURCES = ("synthetic", "synthetic_vl")  # generated data, no file


@dataclass
class VisionConfig:
    """Images of a vision-language model (text-only models ignore this): one pixel budget per kind.

    Every image is resized once, in the environment actor, to a size inside its budget that the
    model's patching accepts as is; the generator and the learner then see the same pixels.
    """

    input_min_pixels: int = 512 * 512  # the seed: at least 512x512 ...
    input_max_pixels: int = 672 * 672 * 2  # ... and at most 672x672x2
    thumbnail_min_pixels: int = 56 * 56  # image-search thumbnails get a smaller budget
    thumbnail_max_pixels: int = 224 * 224
    max_images_per_trajectory: int = 8  # input images plus thumbnails; later thumbnails are left out


# Models agentrl builds itself on first use (agentrl.models.tiny), named in `model.path` instead of a folder.
BUILT_MODELS = ("tiny-text", "tiny-vl", "tiny-text-4l", "random-100m", "random-500m")


@dataclass
class ModelConfig:
    """The policy model (`model.*`): which one, where tiny models are built, its dtype and image budgets."""

    path: str = "tiny-text"  # one of BUILT_MODELS, or any Hugging Face model folder
    cache_dir: str = ""  # where tiny models are built; default $AGENTRL_CACHE or ~/.cache/agentrl
    dtype: str = "float32"
    vision: VisionConfig = field(default_factory=VisionConfig)


@dataclass
class DataConfig:
    """The prompt stream (`data.*`): synthetic or a veRL parquet/JSONL file, its shuffle, and bad-row policy."""

    source: str = "synthetic"  # "synthetic", "synthetic_vl" (with images), or a veRL .parquet / .jsonl file
    num_prompts: int = 512  # synthetic only
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1024  # rows held for the seeded streaming shuffle
    on_bad_row: str = "fail"  # "fail": stop with an error naming the row and field; "skip": count and go on


@dataclass
class EnvConfig:
    """The environment actors (`env.*`): protocol and tools, concurrency, turn and token budgets, tool limits."""

    protocol: str = "lookup"
    system_prompt: str = ""  # "": the protocol's own; else this text (the actions and rewards stay the protocol's)
    tools: list[str] = field(default_factory=lambda: ["lookup"])
    tool_tags: dict[str, str] = field(default_factory=dict)  # extra action tags: tag -> tool name
    num_actors: int = 1
    max_restarts: int = 3  # Ray restarts a crashed environment actor this often; its groups are re-run
    max_concurrent_trajectories: int = 256
    max_turns: int = 3
    max_image_searches: int = 1  # the seed: 1
    max_text_searches: int = 2  # the seed: 1-2
    max_observation_tokens: int = 512  # an observation is cut to this many tokens of the policy's tokenizer
    max_tokens_per_turn: int = 32
    max_total_tokens: int = 256
    tool_timeout_s: float = 30.0
    # per turn, a regex the turn must match (constrained decoding); "" leaves a turn free. Scripted
    # workflows (the `rag` baseline) and tests use it.
    # Tokens of a constrained turn record NaN behaviour log-probs (vLLM reports the constrained
    # distribution's); the learner treats them as on-policy.
    turn_regex: list[str] = field(default_factory=list)
    # "end" (the seed's rollout: the trajectory stops) or "observe" (explain and continue); an image
    # placeholder token in a model turn is an invalid action too
    on_invalid_action: str = "end"
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class BackendConfig:
    """Resilience of one web backend: timeouts, retries, limits shared on a node, a circuit breaker."""

    timeout_s: float = 20.0
    retries: int = 3  # on timeouts, 429 and 5xx, with exponential back-off and jitter
    backoff_s: float = 0.5
    max_concurrency: int = 16
    rate_per_s: float = 0.0  # 0: no rate limit; below 1: one call every 1/rate_per_s seconds
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_reset_s: float = 30.0
    max_response_bytes: int = 4_000_000  # an API reply (JSON) larger than this is refused (pages: tools.fetch)


@dataclass
class CacheConfig:
    """The tool-result cache (`tools.cache.*`): on, off or replay-only, and its SQLite file."""

    mode: str = "on"  # "on", "off", or "replay_only" (cached results only, zero network calls)
    path: str = ""  # SQLite file; default $AGENTRL_CACHE/tools.sqlite


@dataclass
class FetchConfig:
    """What the page reader may fetch (SSRF guard)."""

    allow_hosts: list[str] = field(default_factory=list)  # e.g. ["127.0.0.1"] to open loopback for tests
    max_bytes: int = 2_000_000  # per page or image, read in full up to here
    on_oversize: str = "refuse"  # a page past max_bytes: "refuse" (the hit keeps its snippet) or "truncate"
    max_redirects: int = 3
    content_types: list[str] = field(default_factory=lambda: ["text/html", "text/plain", "application/xhtml+xml"])


@dataclass
class ImageSearchConfig:
    """The `image_search` tool (`tools.image_search.*`): backend, results per call, where they come from."""

    backend: str = "local"  # "serpapi_lens", "cache", or "local"
    top_k: int = 5
    base_url: str = "https://serpapi.com/search"
    cache_dir: str = ""  # backend=cache: a folder written by `agentrl import-cache`
    local_dir: str = ""  # backend=local: a folder of images with titles; default: the built-in demo index
    http: BackendConfig = field(default_factory=BackendConfig)


@dataclass
class TextSearchConfig:
    """The `text_search` tool (`tools.text_search.*`): search backend, page reader, summariser and
    output budgets."""

    backend: str = "local"  # "serpapi", "searxng", "retriever", or "local"
    top_k: int = 3
    base_url: str = ""  # default per backend
    corpus: str = ""  # backend=local: JSONL {id, title, contents}; default: the built-in demo corpus
    retrieval: str = "bm25"  # backend=local: "bm25" (bm25s) or "dense" (all-MiniLM-L6-v2, shipped offline)
    reader: str = "none"  # "jina", "direct", or "none" (search snippets only)
    reader_url: str = "https://r.jina.ai/"
    summariser: str = "none"  # "openai" (any OpenAI-compatible chat endpoint) or "none"
    summariser_url: str = ""
    summariser_model: str = ""
    max_page_chars: int = 4000
    max_output_chars: int = 2000  # budget of the whole observation
    http: BackendConfig = field(default_factory=BackendConfig)


@dataclass
class ToolsConfig:
    """Every tool's settings (`tools.*`): the shared cache and fetcher, the search tools, plugin options."""

    cache: CacheConfig = field(default_factory=CacheConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    image_search: ImageSearchConfig = field(default_factory=ImageSearchConfig)
    text_search: TextSearchConfig = field(default_factory=TextSearchConfig)
    options: dict[str, Any] = field(default_factory=dict)  # per user tool name: keyword arguments


@dataclass
class RolloutConfig:
    """The generators (`rollout.*`): group size, sampling, vLLM engines and how they take new weights."""

    n: int = 4  # samples per prompt (GRPO group size)
    temperature: float = 1.0
    # top_p < 1 and top_k > 0 are refused: the learner's log-probs are of the full distribution, so the
    # importance weights would be silently biased
    top_p: float = 1.0
    top_k: int = -1  # -1: off (vLLM's convention)
    num_engines: int = 1
    max_restarts: int = 3  # Ray restarts a crashed engine this often (it serves after the next weight push)
    gpu_memory_utilization: float = 0.5  # GPU memory share of each engine
    kv_cache_gib: float = 0.25  # KV cache size of each engine on the CPU
    enforce_eager: bool = True
    max_model_len: int = 1024
    on_weight_update: str = "pause_resume"  # "pause_resume" (exact versions) or "continue"
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per engine
    num_gpus_per_engine: float = 0.0
    tensor_parallel_size: int = 1  # GPUs one engine spans (vLLM tensor parallelism)
    # how new weights reach the engines: "object_store" (Ray's object store + an in-place reload; any
    # machine) or "auto" (today: object_store). "nccl" (vLLM's weight-transfer engine, GPUs only) is refused
    # until it is built and tested on a GPU.
    weight_sync: str = "auto"


@dataclass
class RewardConfig:
    """The reward (`reward.*`): a registered function or import path, its actors and options."""

    name: str = "exact_match"  # a registered name or "package.module:function"
    num_actors: int = 1
    max_restarts: int = 3  # Ray restarts a crashed reward actor this often
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LearnerConfig:
    """The learner (`learner.*`): optimiser schedule, GRPO/DAPO loss terms, DeepSpeed and resources."""

    lr: float = 1e-5
    # per learner step t (the seed's clock: all mini-batches and epochs of a step share its rate):
    # "sigmoid_decay" (the seed's: lr * ((1-f)/(1+exp((t-W)/(0.1 W))) + f), W = warmup_steps, f =
    # min_lr_ratio), "warmup_sigmoid" (a ramp from 0 to lr over W, then a decay to f*lr) or "constant"
    lr_schedule: str = "sigmoid_decay"
    warmup_steps: int = 2
    min_lr_ratio: float = 0.9  # the seed's sigmoid decay ends at 90% of the base rate
    weight_decay: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.3  # DAPO clip-higher; the seed uses 0.3
    kl_coef: float = 0.0  # off by default, as in the seed's improved recipe
    entropy_coef: float = 0.0
    importance_cap: float = 2.0  # cap on the importance weight proximal/behaviour
    importance_mode: str = "truncate"  # "truncate" (min(w, cap)) or "mask" (tokens with w > cap dropped)
    # the batch's groups are split into mini_batches, one optimizer step each, repeated `epochs` times;
    # the proximal policy (decoupled PPO) is the learner's at the start of the step
    mini_batches: int = 1
    epochs: int = 1
    grad_clip: float = 1.0
    zero_stage: int = 2
    # data-parallel DeepSpeed ranks, one Ray actor each (num_gpus GPUs and `resources` per rank), joined by
    # torch.distributed (NCCL on GPUs, gloo on the CPU) and placed by a Ray placement group
    num_ranks: int = 1
    ranks_per_node: int = 0  # > 0: the ranks go in node groups of this many (one per node); 0: packed where they fit
    offload: str = "none"  # DeepSpeed CPU offload: "none", "optimizer" (ZeRO >= 1) or "all" (also parameters; ZeRO-3)
    micro_batch_tokens: int = 4096  # micro-batches are packed by token count
    scale_rewards: bool = True  # GRPO: divide advantages by the group's std
    overlong_filter: bool = True
    num_gpus: float = 0.0  # per rank
    # torch intra-op threads of the learner on the CPU; 0: Ray's default (one). `agentrl sft` and the warm start
    # run the learner alone and take every core when this is 0
    cpu_threads: int = 0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank
    slowdown_s: float = 0.0  # test hook: sleep this long per step to emulate a slow learner


@dataclass
class SftConfig:
    """`agentrl sft` (`sft.*`): supervised fine-tuning on trajectory JSONL with the learner's engine (its
    DeepSpeed settings and micro-batching); model turns trained, observations and the prompt not."""

    epochs: int = 3
    lr: float = 1e-3  # constant
    batch_size: int = 16  # trajectories per optimizer step
    seed: int = 0  # the order of the trajectories in each epoch
    out: str = ""  # the checkpoint folder; default: <trainer.output_dir>/<trainer.run_name>/checkpoints/sft
    # trajectory JSONL: when set, `agentrl train` first fine-tunes model.path on it (the warm start, built
    # once and cached under the cache root by content) and runs RL from the result
    data: str = ""


@dataclass
class WandbConfig:
    """Weights & Biases logging (`trainer.wandb.*`)."""

    project: str = "agentrl"
    mode: str = "auto"  # auto: online when WANDB_API_KEY is set, else offline; or online/offline/disabled


@dataclass
class TrainerConfig:
    """The run (`trainer.*`): async or sync, steps, batch and staleness bounds, outputs, periodic eval,
    console log level."""

    mode: str = "async"  # "async" or "sync" (on-policy: generate all, then train)
    total_steps: int = 20
    batch_groups: int = 4  # B: groups per learner step
    max_staleness: int = 1
    # async only: groups started beyond B * (max_staleness + 1), so a group held up by a slow tool call has
    # a stand-in and the learner does not wait; a spare that goes stale is dropped and counted
    spare_groups: int = 0
    queue_capacity: int = 16  # groups
    run_name: str = "demo"
    output_dir: str = "runs"
    seed: int = 0
    save_final: bool = True
    progress: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # every eval_every learner steps (0: never), `agentrl eval` of eval_data on the current policy, logged as
    # eval/* in metrics.jsonl and wandb, with its results in RUN/eval/step_N/
    eval_every: int = 0
    eval_data: str = ""
    eval_workflow: str = "on_demand"  # direct, rag or on_demand
    eval_samples: int = 1  # 1: greedy; more: sampled at rollout.temperature
    eval_limit: int = 0  # only the first N rows (0: all)
    # "info": the progress bar and agentrl's own lines; "debug": also vLLM's, Ray's and the libraries' logs
    log_level: str = "info"
    # checkpoints (RUN/checkpoints/step_N): every save_every steps (0: only at the end) and at a clean stop;
    # the newest keep_checkpoints are kept. resume: "auto" continues from the run's newest complete one
    save_every: int = 0
    keep_checkpoints: int = 2
    resume: str = "never"  # "never" or "auto"
    stop_timeout_s: float = 30.0  # on SIGINT/SIGTERM: how long in-flight groups may finish before the save
    # a group whose environment, reward or generator actor died is re-run this many times, then failed
    max_group_retries: int = 3


@dataclass
class FaultsConfig:
    """Injected faults (`faults.*`), for tests and `agentrl bench soak`: tool failures at a rate, actors
    killed on a schedule (0: never). Ray restarts killed environment, reward and generator actors."""

    tool_error_rate: float = 0.0  # a tool call raises
    tool_timeout_rate: float = 0.0  # a tool call times out at once
    tool_hang_rate: float = 0.0  # a tool call never returns (env.tool_timeout_s ends it)
    kill_env_every_s: float = 0.0
    kill_reward_every_s: float = 0.0
    kill_generator_every_s: float = 0.0
    kill_learner_rank_at_step: int = 0  # after this step, rank `kill_learner_rank` is killed: the run stops
    kill_learner_rank: int = 0
    kill_driver_at_step: int = 0  # after this step (and its checkpoint), the driver SIGKILLs itself
    seed: int = 0


@dataclass
class Config:
    """The whole configuration: one section per part of the system (`agentrl train CONFIG key=value ...`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)


