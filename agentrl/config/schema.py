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

    input_min_pixels: int = 512 * 512  # fewest pixels of a question's input image (the seed: 512x512)
    input_max_pixels: int = 672 * 672 * 2  # most pixels of an input image (the seed: 672x672x2)
    thumbnail_min_pixels: int = 56 * 56  # fewest pixels of an image-search thumbnail (a smaller budget)
    thumbnail_max_pixels: int = 224 * 224  # most pixels of an image-search thumbnail
    max_images_per_trajectory: int = 8  # input images plus thumbnails; later thumbnails are left out


# Models agentrl builds (agentrl.models.tiny) or converts from a packaged GGUF file (agentrl.models.imported)
# on first use, named in `model.path` instead of a folder.
BUILT_MODELS = ("tiny-text", "tiny-vl", "tiny-text-4l", "random-100m", "random-500m", "smollm2-135m")


@dataclass
class ModelConfig:
    """The policy model (`model.*`): which one, where tiny models are built, its dtype and image budgets."""

    path: str = "tiny-text"  # a model agentrl builds or imports (BUILT_MODELS: tiny-text, smollm2-135m...) or a folder
    cache_dir: str = ""  # where tiny models are built; default $AGENTRL_CACHE or ~/.cache/agentrl
    # learner and engines: "float32" or "bfloat16" (bf16 trains with fp32 master weights and fp32 gradient
    # reduction, and pushes bf16 weights to the engines)
    dtype: str = "float32"
    vision: VisionConfig = field(default_factory=VisionConfig)


@dataclass
class DataConfig:
    """The prompt stream (`data.*`): synthetic or a veRL parquet/JSONL file, its shuffle, and bad-row policy."""

    source: str = "synthetic"  # "synthetic", "synthetic_vl" (with images), or a veRL .parquet / .jsonl file
    num_prompts: int = 512  # rows of a synthetic source (synthetic sources only)
    seed: int = 0  # the shuffle's seed (and the synthetic rows' and the lookup and latency tools' tables)
    shuffle: bool = True  # a file's rows in a seeded order per epoch (False: in file order)
    shuffle_buffer: int = 1024  # rows held for the seeded streaming shuffle
    on_bad_row: str = "fail"  # "fail": stop with an error naming the row and field; "skip": count and go on


@dataclass
class EnvConfig:
    """The environment actors (`env.*`): protocol and tools, concurrency, turn and token budgets, tool limits."""

    protocol: str = "lookup"  # the action format and system prompt: "lookup", "mmsearch_r1", "react" or "reasoning"
    system_prompt: str = ""  # "": the protocol's own; else this text (the actions and rewards stay the protocol's)
    # the tools the policy may call: registered names (lookup, image_search, text_search, latency) or
    # "package.module:Class" import paths
    tools: list[str] = field(default_factory=lambda: ["lookup"])
    tool_tags: dict[str, str] = field(default_factory=dict)  # extra action tags: tag -> tool name
    num_actors: int = 1  # environment actors; each runs many trajectories at once on one asyncio loop
    max_restarts: int = 3  # Ray restarts a crashed environment actor this often; its groups are re-run
    max_concurrent_trajectories: int = 256  # trajectories one environment actor runs at once
    max_turns: int = 3  # model turns per trajectory; one that has not answered by the last ends there
    max_image_searches: int = 1  # image_search calls a trajectory may make (the seed: 1)
    max_text_searches: int = 2  # text_search calls a trajectory may make (the seed: 1-2)
    max_observation_tokens: int = 512  # an observation is cut to this many tokens of the policy's tokenizer
    max_tokens_per_turn: int = 32  # tokens one model turn may generate (a turn cut here counts as truncated)
    max_total_tokens: int = 256  # token budget of a trajectory's response: model turns and observations together
    tool_timeout_s: float = 30.0  # a tool call still running after this long ends as an error observation
    # per turn, a regex the turn must match (constrained decoding); "" leaves a turn free. Scripted
    # workflows (the `rag` baseline) and tests use it.
    # Tokens of a constrained turn record NaN behaviour log-probs (vLLM reports the constrained
    # distribution's); the learner treats them as on-policy.
    turn_regex: list[str] = field(default_factory=list)
    # "end" (the seed's rollout: the trajectory stops) or "observe" (explain and continue); an image
    # placeholder token in a model turn is an invalid action too
    on_invalid_action: str = "end"
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per environment actor


@dataclass
class BackendConfig:
    """Resilience of one web backend: timeouts, retries, limits shared on a node, a circuit breaker."""

    timeout_s: float = 20.0  # per request (each retry gets its own)
    retries: int = 3  # on timeouts, 429 and 5xx, with exponential back-off and jitter
    backoff_s: float = 0.5  # the first retry's delay, doubled for each next one (with jitter)
    max_concurrency: int = 16  # requests in flight at once to this backend (shared by the actors on a node)
    rate_per_s: float = 0.0  # 0: no rate limit; below 1: one call every 1/rate_per_s seconds
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_reset_s: float = 30.0  # an open circuit lets a call through again after this long
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
    max_redirects: int = 3  # redirects followed, each target checked like the first URL
    # a page or image is read only when its content type starts with one of these
    content_types: list[str] = field(default_factory=lambda: ["text/html", "text/plain", "application/xhtml+xml"])


@dataclass
class ImageSearchConfig:
    """The `image_search` tool (`tools.image_search.*`): backend, results per call, where they come from."""

    backend: str = "local"  # "serpapi_lens", "cache", or "local"
    top_k: int = 5  # results per call
    base_url: str = "https://serpapi.com/search"  # backend=serpapi_lens: the SerpAPI endpoint
    cache_dir: str = ""  # backend=cache: a folder written by `agentrl import-cache`
    local_dir: str = ""  # backend=local: a folder of images with titles; default: the built-in demo index
    http: BackendConfig = field(default_factory=BackendConfig)


@dataclass
class TextSearchConfig:
    """The `text_search` tool (`tools.text_search.*`): search backend, page reader, summariser and
    output budgets."""

    backend: str = "local"  # "serpapi", "searxng", "retriever", or "local"
    top_k: int = 3  # results per call
    base_url: str = ""  # the search backend's URL; "": its default (SerpAPI, or a local searxng or retriever port)
    corpus: str = ""  # backend=local: JSONL {id, title, contents}; default: the built-in demo corpus
    retrieval: str = "bm25"  # backend=local: "bm25" (bm25s) or "dense" (all-MiniLM-L6-v2, shipped offline)
    reader: str = "none"  # "jina", "direct", or "none" (search snippets only)
    reader_url: str = "https://r.jina.ai/"  # reader=jina: the page's URL is appended to this
    summariser: str = "none"  # "openai" (any OpenAI-compatible chat endpoint) or "none"
    summariser_url: str = ""  # summariser=openai: the endpoint's base URL (.../v1)
    summariser_model: str = ""  # summariser=openai: the model name sent to it
    summary_max_tokens: int = 256  # summariser=openai: the most tokens one page's summary may take
    max_page_chars: int = 4000  # each page (or its summary without a summariser) is cut to this many characters
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
    temperature: float = 1.0  # sampling temperature; the learner scores tokens at the same temperature
    # nucleus sampling; below 1 it is refused (as top_k > 0 is): the learner's log-probs are of the full
    # distribution, so the importance weights would be silently biased
    top_p: float = 1.0
    top_k: int = -1  # top-k sampling; -1: off (vLLM's convention), the only value accepted
    num_engines: int = 1  # vLLM engines, one Ray actor each
    max_restarts: int = 3  # Ray restarts a crashed engine this often (it serves after the next weight push)
    gpu_memory_utilization: float = 0.5  # GPU memory share of each engine
    kv_cache_gib: float = 0.25  # KV cache size of each engine on the CPU
    enforce_eager: bool = True  # vLLM without CUDA graphs (faster start-up)
    max_model_len: int = 1024  # vLLM's context length: prompt and response together
    # a weight push during a turn: "pause_resume" (the turn is paused and resumed on the new weights; every
    # token labelled with its exact version) or "continue" (the turn runs on, labelled with its starting version)
    on_weight_update: str = "pause_resume"
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per engine
    num_gpus_per_engine: float = 0.0  # Ray GPUs per engine (0: on the CPU)
    tensor_parallel_size: int = 1  # GPUs one engine spans (vLLM tensor parallelism)
    # how new weights reach the engines: "object_store" (Ray's object store, a shared-memory file and an
    # in-place load; any machine), "collective" (a broadcast from learner rank 0 to every engine's model
    # process: gloo on the CPU, NCCL on GPUs) or "auto" (collective on GPUs, object_store on the CPU)
    weight_sync: str = "auto"
    weight_bucket_mb: int = 256  # collective: the broadcast's bucket (engines load a bucket while the next arrives)


@dataclass
class RewardConfig:
    """The reward (`reward.*`): a registered function or import path, its actors and options."""

    name: str = "exact_match"  # a registered name or "package.module:function"
    num_actors: int = 1  # reward actors behind one pool
    max_restarts: int = 3  # Ray restarts a crashed reward actor this often
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the reward (checked at start-up)


@dataclass
class LearnerConfig:
    """The learner (`learner.*`): optimiser schedule, GRPO/DAPO loss terms, DeepSpeed and resources."""

    lr: float = 1e-5  # AdamW's base learning rate
    # per learner step t (the seed's clock: all mini-batches and epochs of a step share its rate):
    # "sigmoid_decay" (the seed's: lr * ((1-f)/(1+exp((t-W)/(0.1 W))) + f), W = warmup_steps, f =
    # min_lr_ratio), "warmup_sigmoid" (a ramp from 0 to lr over W, then a decay to f*lr) or "constant"
    lr_schedule: str = "sigmoid_decay"
    warmup_steps: int = 2  # W above, in learner steps
    min_lr_ratio: float = 0.9  # the seed's sigmoid decay ends at 90% of the base rate
    weight_decay: float = 0.0  # AdamW's
    clip_low: float = 0.2  # the ratio to the step's start policy is clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.3  # DAPO clip-higher; the seed uses 0.3
    kl_coef: float = 0.0  # weight of a k3 KL term to the initial policy; 0: off, as in the seed's improved recipe
    entropy_coef: float = 0.0  # weight of an entropy bonus on the trained tokens (0: off)
    importance_cap: float = 2.0  # cap on the importance weight proximal/behaviour
    importance_mode: str = "truncate"  # "truncate" (min(w, cap)) or "mask" (tokens with w > cap dropped)
    # the batch's groups are split into mini_batches, one optimizer step each, repeated `epochs` times;
    # the proximal policy (decoupled PPO) is the learner's at the start of the step
    mini_batches: int = 1
    epochs: int = 1  # passes over the step's mini-batches
    grad_clip: float = 1.0  # gradient norm clipping (DeepSpeed's gradient_clipping)
    zero_stage: int = 2  # DeepSpeed ZeRO 0-3: shards optimizer states (1), also gradients (2), also parameters (3)
    # data-parallel DeepSpeed ranks, one Ray actor each (num_gpus GPUs and `resources` per rank), joined by
    # torch.distributed (NCCL on GPUs, gloo on the CPU) and placed by a Ray placement group
    num_ranks: int = 1
    ranks_per_node: int = 0  # > 0: the ranks go in node groups of this many (one per node); 0: packed where they fit
    offload: str = "none"  # DeepSpeed CPU offload: "none", "optimizer" (ZeRO >= 1) or "all" (also parameters; ZeRO-3)
    micro_batch_tokens: int = 4096  # micro-batches are packed by token count
    scale_rewards: bool = True  # GRPO: divide advantages by the group's std
    # leave out a trajectory whose last model turn was cut at a token budget (not one that an observation filled)
    overlong_filter: bool = True
    num_gpus: float = 0.0  # GPUs per learner rank
    # torch intra-op threads of each learner rank on the CPU; 0: Ray's default (one). More threads speed up a
    # learner that has the cores to itself but slow one that shares them with engines (docs/benchmarks.md#async).
    # `agentrl sft` and the warm start run the learner alone and take every core when this is 0
    cpu_threads: int = 0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank
    slowdown_s: float = 0.0  # test hook: sleep this long per step to emulate a slow learner


@dataclass
class SftConfig:
    """`agentrl sft` (`sft.*`): supervised fine-tuning on trajectory JSONL with the learner's engine (its
    DeepSpeed settings and micro-batching); model turns trained, observations and the prompt not."""

    epochs: int = 3  # passes over the trajectory file
    lr: float = 1e-3  # learning rate (constant)
    batch_size: int = 16  # trajectories per optimizer step
    seed: int = 0  # the order of the trajectories in each epoch
    out: str = ""  # the checkpoint folder; default: <trainer.output_dir>/<trainer.run_name>/checkpoints/sft
    # trajectory JSONL: when set, `agentrl train` first fine-tunes model.path on it (the warm start, built
    # once and cached under the cache root by content) and runs RL from the result
    data: str = ""


@dataclass
class WandbConfig:
    """Weights & Biases logging (`trainer.wandb.*`)."""

    project: str = "agentrl"  # the wandb project
    mode: str = "auto"  # auto: online when WANDB_API_KEY is set, else offline; or online/offline/disabled


@dataclass
class TrainerConfig:
    """The run (`trainer.*`): async or sync, steps, batch and staleness bounds, outputs, periodic eval,
    console log level."""

    mode: str = "async"  # "async" or "sync" (on-policy: generate all, then train)
    total_steps: int = 20  # learner steps in the run
    batch_groups: int = 4  # B: groups per learner step
    max_staleness: int = 1  # s: a group with a token more than s policy versions old is dropped (sync: 0)
    # async only: groups started beyond B * (max_staleness + 1), so a group held up by a slow tool call has
    # a stand-in and the learner does not wait; a spare that goes stale is dropped and counted
    spare_groups: int = 0
    queue_capacity: int = 16  # groups the replay queue holds (at least batch_groups)
    run_name: str = "demo"  # the run's folder is <output_dir>/<run_name> (one folder name: no '/', not '..')
    output_dir: str = "runs"  # the folder that holds the runs' folders
    seed: int = 0  # the learner's torch seed and the engines' sampling seeds (engine i: seed + i)
    save_final: bool = True  # a checkpoint at the end of the run (checkpoints/final)
    progress: bool = True  # the progress bar on the console
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # every eval_every learner steps (0: never), `agentrl eval` of eval_data on the current policy, logged as
    # eval/* in metrics.jsonl and wandb, with its results in RUN/eval/step_N/
    eval_every: int = 0
    eval_data: str = ""  # the veRL parquet or JSONL file evaluated every eval_every steps
    eval_workflow: str = "on_demand"  # the eval's workflow: direct, rag or on_demand
    eval_samples: int = 1  # 1: greedy; more: sampled at rollout.temperature
    eval_limit: int = 0  # only the first N rows (0: all)
    # with eval_every: also evaluate the starting policy (RUN/eval/step_0), the "before" of the held-out
    # before/after table `agentrl train` prints at the end
    eval_before: bool = True
    # "info": the progress bar and agentrl's own lines; "debug": also vLLM's, Ray's and the libraries' logs
    log_level: str = "info"
    # checkpoints (RUN/checkpoints/step_N): every save_every steps (0: only at the end) and at a clean stop
    save_every: int = 0
    keep_checkpoints: int = 2  # the newest this many step checkpoints are kept
    resume: str = "never"  # "never", or "auto": continue the run from its newest complete checkpoint
    stop_timeout_s: float = 30.0  # on SIGINT/SIGTERM: how long in-flight groups may finish before the save
    # a group whose environment, reward or generator actor died is re-run this many times, then failed
    max_group_retries: int = 3
    # this many groups failing one after another, none reaching the queue between, stop the run (exit 1,
    # naming the last reason): a setup in which every group fails; 0: never
    max_failed_groups_in_a_row: int = 64


@dataclass
class FaultsConfig:
    """Injected faults (`faults.*`), for tests and `agentrl bench soak`: tool failures at a rate, actors
    killed on a schedule (0: never). Ray restarts killed environment, reward and generator actors."""

    tool_error_rate: float = 0.0  # share of tool calls that raise
    tool_timeout_rate: float = 0.0  # share of tool calls that time out at once
    tool_hang_rate: float = 0.0  # share of tool calls that never return (env.tool_timeout_s ends them)
    kill_env_every_s: float = 0.0  # every this many seconds a random environment actor is killed
    kill_reward_every_s: float = 0.0  # every this many seconds a random reward actor is killed
    kill_generator_every_s: float = 0.0  # every this many seconds a random generator engine is killed
    kill_learner_rank_at_step: int = 0  # after this step, rank `kill_learner_rank` is killed: the run stops
    kill_learner_rank: int = 0  # the learner rank that kill_learner_rank_at_step kills
    kill_driver_at_step: int = 0  # after this step (and its checkpoint), the driver SIGKILLs itself
    seed: int = 0  # which actor is killed, and the tool faults' draws


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


