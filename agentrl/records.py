"""Records that cross actor boundaries. Plain dataclasses, so Ray pickles them and tests read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Observation tokens carry no policy version (the environment wrote them, not the policy).
NO_VERSION = -1


@dataclass
class SamplingConfig:
    """Sampling settings of one generation turn."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    regex: str | None = None  # constrain the turn to this pattern (structured outputs)
    ignore_eos: bool = False  # generate max_tokens regardless of end-of-sequence (benchmarks, tests)


@dataclass
class GenerationRequest:
    """Token-in: one turn of one trajectory."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingConfig
    images: list[Any] = field(default_factory=list)


@dataclass
class GenerationResult:
    """Token-out: what one turn produced, with the version that produced each token."""

    token_ids: list[int]
    logprobs: list[float]
    policy_versions: list[int]
    finish_reason: str  # "stop" | "length" | "abort"
    engine_index: int
    resumed: int = 0  # how many times the turn was paused for a weight update and resumed


@dataclass
class ToolCall:
    """One tool call as the trajectory log keeps it."""

    tool: str
    arguments: dict[str, Any]
    latency_s: float
    ok: bool
    error: str | None = None
    cached: bool = False


@dataclass
class RewardResult:
    """Total reward and its named components (accuracy, format, search_count, ...)."""

    total: float
    components: dict[str, float] = field(default_factory=dict)


@dataclass
class Trajectory:
    """One multi-turn rollout, token-aligned from generator to learner (no re-tokenisation).

    `response_ids` holds model turns and observations interleaved; `loss_mask` is 1 on model tokens
    and 0 on observation tokens; `behaviour_logprobs` and `policy_versions` are per response token
    (0.0 and NO_VERSION on observation tokens).
    """

    traj_id: str
    group_id: str
    data_row_id: int
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    behaviour_logprobs: list[float] = field(default_factory=list)
    policy_versions: list[int] = field(default_factory=list)
    turn_boundaries: list[tuple[int, int]] = field(default_factory=list)  # model turns [start, end)
    tool_calls: list[ToolCall] = field(default_factory=list)
    turn_texts: list[str] = field(default_factory=list)  # decoded model turns
    answer: str | None = None
    finish_reason: str = ""  # "answer" | "max_turns" | "max_total_tokens" | "length" | "error"
    truncated: bool = False  # overlong: masked out of the loss by overlong filtering
    reward: RewardResult | None = None
    ground_truth: Any = None
    invalid_actions: int = 0
    # Every image of the sequence in order (prompt images, then tool thumbnails), as PNG bytes already
    # resized to their budget: the generator and the learner decode the same pixels.
    images: list[bytes] = field(default_factory=list)
    # where its time went (agentrl/timing.py): seconds per kind, and (kind, start, end) wall-clock spans
    timings: dict[str, float] = field(default_factory=dict)
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def append(self, ids: list[int], *, trainable: bool, logprobs: list[float] | None = None,
               versions: list[int] | None = None) -> None:
        """Append model tokens (trainable) or observation tokens (mask 0) to the response."""
        start = len(self.response_ids)
        self.response_ids.extend(ids)
        self.loss_mask.extend([1 if trainable else 0] * len(ids))
        self.behaviour_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.policy_versions.extend(versions if versions is not None else [NO_VERSION] * len(ids))
        if trainable:
            self.turn_boundaries.append((start, start + len(ids)))

    @property
    def min_policy_version(self) -> int:
        versions = [v for v in self.policy_versions if v != NO_VERSION]
        return min(versions) if versions else NO_VERSION

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class TrajectoryGroup:
    """All n samples of one prompt: the unit the replay queue holds and the learner trains on."""

    group_id: str
    start_version: int
    trajectories: list[Trajectory]
    category: str = ""  # the prompt's data category (search_free, search_required, ...), for the step's metrics

    @property
    def min_policy_version(self) -> int:
        versions = [t.min_policy_version for t in self.trajectories if t.min_policy_version >= 0]
        return min(versions) if versions else self.start_version

    @property
    def rewards(self) -> list[float]:
        return [t.reward.total if t.reward else 0.0 for t in self.trajectories]


@dataclass
class TrainBatch:
    """B whole groups handed to the learner, the queue's depth after them, and how long the learner waited."""

    groups: list[TrajectoryGroup]
    queue_depth: int = 0
    wait_s: float = 0.0


@dataclass
class LearnerStepStats:
    """What one learner step reports back to the orchestrator."""

    step: int
    policy_version: int
    loss: float
    grad_norm: float
    lr: float
    tokens: int
    samples: int
    train_s: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class WeightSnapshot:
    """Weights of one policy version, shipped through Ray's object store (works across nodes)."""

    version: int
    # name -> CPU torch tensor in the learner's dtype (numpy has no bfloat16, so no numpy round trip)
    tensors: dict[str, Any]


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor lies in a flat weight buffer (`agentrl.actors.weight_buffers`)."""

    name: str
    dtype: str  # a torch dtype's name: "bfloat16", "float32"
    shape: tuple[int, ...]
    offset: int  # bytes from the buffer's start
    nbytes: int

    def as_tuple(self) -> tuple[str, str, tuple[int, ...], int, int]:
        """Plain values (what crosses into vLLM's engine process)."""
        return (self.name, self.dtype, tuple(self.shape), self.offset, self.nbytes)


@dataclass(frozen=True)
class SharedBuffer:
    """Where a process's packed weight buffer can be mapped by the processes of its node: an anonymous
    shared-memory file (memfd), opened through its owner's /proc entry while the owner lives."""

    node_id: str  # Ray's id of the owner's node ("" outside Ray)
    path: str  # /proc/<pid>/fd/<fd>
    size: int
    buffer_id: str  # unique per buffer: a path can name another process's file later


@dataclass
class PackedWeights:
    """Weights of one policy version as one flat byte buffer and its layout. On the learner's node an engine
    maps the learner's buffer itself (`shared`: no copy); an engine elsewhere gets the bytes (`data`) through
    Ray's object store, which carries the numpy buffer without pickling it, one object per node."""

    version: int
    slots: list[TensorSlot]
    data: Any = None  # numpy uint8 array (numpy has no bfloat16: the bytes are typed by the slots), or None
    shared: SharedBuffer | None = None
    # which packing of the buffer this is (the buffer's header holds it): a load checks that the buffer still
    # holds this packing, a version packed again included
    generation: int = 0


@dataclass
class TrainSequence:
    """One trajectory as a learner rank trains on it: token ids as generated (prompt + response), the loss
    mask and behaviour log-probs per response token, its advantage, and its images."""

    ids: list[int]
    prompt_len: int
    mask: list[int]  # per response token
    behaviour: list[float]
    advantage: float
    images: list[bytes] = field(default_factory=list)  # every image of the sequence, in order
    proximal: list[float] | None = None  # the policy's log-probs at the start of the step (several updates)


@dataclass
class RankPlan:
    """One learner rank's share of a learner step. Every rank of the group gets the same number of
    micro-batches in each phase (padded with masked-out sequences), because under ZeRO-3 every forward
    and backward is a collective that all ranks must join."""

    # micro-batches whose log-probs become the proximal policy before the first update (empty: one update)
    proximal: list[list[TrainSequence]]
    updates: list[list[list[TrainSequence]]]  # per optimizer step, its micro-batches
    update_tokens: list[int]  # per optimizer step, the masked tokens of ALL ranks (the token-mean's divisor)


@dataclass
class RankStepResult:
    """What a rank reports for its share of a learner step: per optimizer step its loss share and the
    (global) gradient norm, and token-weighted sums of the loss's diagnostics."""

    losses: list[float]
    grad_norms: list[float]
    lrs: list[float]  # the rate each optimizer step used
    stat_sums: dict[str, float]
    tokens: int


@dataclass
class DataRow:
    """One prompt as the orchestrator feeds it to an environment actor."""

    row_id: int
    question: str
    ground_truth: list[str]
    candidate_answers: list[str] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)  # encoded image bytes
    image_urls: list[str] = field(default_factory=list)
    data_source: str = "synthetic"
    data_id: str = ""
    category: str = ""


@dataclass
class Observation:
    """What a tool returns to the conversation: text, and images as encoded bytes (PNG/JPEG), each
    placed in the text by an IMAGE_MARKER."""

    text: str
    images: list[bytes] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    cached: bool = False


@dataclass
class RewardInput:
    """What a reward function sees of a finished trajectory (text, not tokens)."""

    question: str
    turns: list[str]
    answer: str | None
    ground_truth: list[str] | str
    candidate_answers: list[str] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)  # tool names, in order
    finish_reason: str = ""
    images: list[bytes] = field(default_factory=list)  # the question's images (for judges that see them)


@dataclass
class GroupOutcome:
    """How one admitted prompt ended in its environment actor."""

    status: str  # "queued" | "failed"
    reason: str = ""  # why it failed (the tool and token counts travel with the trajectories)


@dataclass
class QueueStats:
    """The replay queue's counters (`ReplayQueue.stats`); its depth comes with each put and batch."""

    groups_in: int
    groups_out: int
    groups_dropped_stale: int
    producer_wait_s: float  # environment actors' total wait for room in the queue
    dropped_group_ids: list[str] = field(default_factory=list)


@dataclass
class EnvironmentStats:
    """An environment actor's load (`EnvironmentActor.stats`)."""

    in_flight: int  # trajectories running now
    # cumulative counts since the actor started: each tool's `stats` ("text_search/pages_cut", ...) and
    # its tool cache's ("cache/hits", "cache/misses", "cache/corrupt", "cache/put_errors")
    tool_counters: dict[str, int] = field(default_factory=dict)


@dataclass
class ToolProfile:
    """Where an environment actor's tool time and CPU went (`EnvironmentActor.tool_profile`)."""

    stage_seconds: dict[str, list[float]]  # "<tool>/<stage>" (text_search/fetch, ...) -> recent wall seconds
    cpu_s: float  # CPU seconds of the actor's process and its children (page-extraction workers) since it started
    trajectories: int  # trajectories finished since it started


@dataclass
class EngineStats:
    """One engine's counters (`GeneratorActor.stats`)."""

    tokens_generated: int
    busy_s: float  # seconds with at least one request running
    policy_version: int  # the version of the weights loaded now
    serving: bool = True  # False: restarted by Ray and waiting for the current weights
