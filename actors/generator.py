"""The generator: one vLLM `AsyncLLM` engine in a Ray actor, token-in/token-out.

Every generated token records the policy version that produced it. With
`rollout.on_weight_update=pause_resume` (default) a weight update aborts the in-flight turns, loads the
new weights while no request can start, and resubmits each turn with what it had generated so far
appended to its prompt: the tokens before the update carry the old version, the rest the new one,
exactly. With `continue`, turns run on and all their tokens carry the version they started with (a
conservative label: staleness is over-, never under-estimated). In both modes no request of a new version
reads keys/values the old weights computed: each request's prefix-cache key is salted with its policy
version, and the cache is dropped whenever no request holds it. A resumed turn honours its stop strings
across the resume (vLLM looks for them only in a request's own output). The weights themselves travel
by `agentrl.actors.weights`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from agentrl.actors.peers import peers_from_state, peers_state
from agentrl.actors.weights import ENGINE_EXTENSION, ObjectStoreTransport
from agentrl.config import VisionConfig
from agentrl.console import engine_log_options
from agentrl.models.base import decode_image
from agentrl.records import (
    EngineStats,
    GenerationRequest,
    GenerationResult,
    PackedWeights,
    SamplingConfig,
    WeightSnapshot,
)

ENGINE_DOWN_S = 60.0  # how long a pool avoids an engine that died (Ray restarts it meanwhile)
ABORT_POLL_S = 0.005  # how often an abort is repeated until every aborted request's stream has ended


def cache_salt(version: int) -> str:
    """The prefix-cache salt of a request generated under `version`: vLLM hashes it into the first block's
    key, so a request can only reuse blocks computed under its own version's weights."""
    return f"agentrl-policy-{version}"


def first_stop_cut(tokens: list[int], decode: Callable[[list[int]], str], stops: list[str]) -> int | None:
    """How many of `tokens` to keep so that the turn ends with its first stop string (None: none occurs).

    The text of a prefix grows with the prefix, so the shortest prefix whose text holds a stop string is
    found by bisection; the token that completes the stop string is kept, as vLLM keeps it."""
    if not stops or not any(stop in decode(tokens) for stop in stops):
        return None
    lo, hi = 1, len(tokens)  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if any(stop in decode(tokens[:mid]) for stop in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def sampling_params(s: SamplingConfig, done: int) -> Any:
    """vLLM's sampling parameters for the rest of a turn that has `done` tokens already."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    return SamplingParams(
        n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens - done,
        logprobs=0, stop=s.stop or None, include_stop_str_in_output=True,
        output_kind=RequestOutputKind.DELTA, seed=s.seed, ignore_eos=s.ignore_eos,
        structured_outputs=StructuredOutputsParams(regex=s.regex) if s.regex else None,
    )


class GeneratorActor:
    """One inference engine. Created through `agentrl.actors.factory`, which applies Ray options."""

    def __init__(self, model_path: str, engine_index: int, dtype: str = "float32",
                 gpu_memory_utilization: float = 0.1, kv_cache_gib: float = 0.25, enforce_eager: bool = True,
                 max_model_len: int = 1024, on_weight_update: str = "pause_resume",
                 seed: int = 0, vision: VisionConfig | None = None, tensor_parallel_size: int = 1) -> None:
        from agentrl.models import get_adapter

        self.model_path = model_path
        # Sequences arrive with image placeholders expanded (as the learner sees them); vLLM takes them
        # collapsed and expands them itself, and every request checks that both expansions agree.
        self.adapter = get_adapter(model_path, vision)
        self.engine_index = engine_index
        self.on_weight_update = on_weight_update
        self._engine_kwargs = dict(
            model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager, max_model_len=max_model_len, seed=seed + engine_index,
            # Log-probs after temperature scaling: the distribution the tokens were sampled from.
            logprobs_mode="processed_logprobs", enable_prefix_caching=True, **self.adapter.engine_kwargs(),
            worker_extension_cls=ENGINE_EXTENSION,  # the weight push's in-place load
            **engine_log_options(),  # no weight-loading bar after every update unless debugging
        )
        if tensor_parallel_size > 1:  # an engine over several GPUs: vLLM places its workers with Ray
            self._engine_kwargs.update(tensor_parallel_size=tensor_parallel_size, distributed_executor_backend="ray")
        import torch

        if not torch.cuda.is_available():
            # On the CPU vLLM sizes the KV cache as a share of RAM minus the worker's RSS, which
            # fails for small shares; an explicit size is predictable.
            self._engine_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
            if tensor_parallel_size == 1:
                # The model runs inside vLLM's engine-core process instead of a third process of its own:
                # each process imports torch and vLLM anew (about 8 s here), so an engine starts in about
                # half the time. vLLM's CPU platform only keeps the one-process executor with this set.
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
                self._engine_kwargs["distributed_executor_backend"] = "uni"
        import ray

        self.engine: Any = None
        self.policy_version = 0
        self._open = asyncio.Event()  # closed while weights are being replaced
        self._open.set()
        # Restarted by Ray after a crash: its base weights are stale, so no request starts until the
        # driver's next push (`update_weights`, which also starts the engine) brings the current ones.
        self._serving = asyncio.Event()
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._inflight: set[str] = set()
        self.transport = ObjectStoreTransport(prefix=f"agentrl-gen{engine_index}-")
        self.weight_group_id: str | None = None  # the collective weight group this engine's model joined
        self.tokens_generated = 0
        self.busy_s = 0.0
        self._active = 0
        self._busy_since = 0.0

    async def start(self) -> int:
        """Start the engine (inside the actor's event loop, which vLLM's async client binds to)."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if self.engine is None:
            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._engine_kwargs))
        if not self.restarted:
            self._serving.set()
        return self.engine_index

    def _mark(self, delta: int) -> None:
        now = time.perf_counter()
        if self._active > 0:
            self.busy_s += now - self._busy_since
        self._busy_since = now
        self._active += delta

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate one turn. Returns token ids, behaviour log-probs and a version per token."""
        await self._serving.wait()
        s = request.sampling
        tokens: list[int] = []
        logprobs: list[float] = []
        versions: list[int] = []
        finish = "length"
        resumed = 0
        # decoded once per turn, not once per resume (PIL images; vLLM re-processes them itself)
        images = {"image": [decode_image(im) for im in request.images]} if request.images else None
        self._mark(+1)
        try:
            while len(tokens) < s.max_tokens:
                await self._open.wait()
                version = self.policy_version
                expected = request.prompt_ids + tokens
                prompt: dict[str, Any] = {"prompt_token_ids": self.adapter.collapse_placeholders(expected),
                                          "cache_salt": cache_salt(version)}
                if images:
                    prompt["multi_modal_data"] = images
                rid = f"{request.request_id}-{resumed}-{uuid.uuid4().hex[:6]}"
                new, new_logprobs, finish = await self._request(request.request_id, prompt, expected,
                                                                sampling_params(s, len(tokens)), rid)
                tokens += new
                logprobs += new_logprobs
                versions += [version] * len(new)
                if finish != "abort":
                    break
                resumed += 1  # aborted for a weight update: resume under the new weights
                if s.regex:  # a constrained turn cannot resume mid-pattern: regenerate it whole
                    tokens, logprobs, versions = [], [], []
            # a stop string split by a resume was seen by neither request: cut the turn at its first one
            cut = first_stop_cut(tokens, self._decode, s.stop) if resumed and s.stop else None
            if cut is not None:
                tokens, logprobs, versions, finish = tokens[:cut], logprobs[:cut], versions[:cut], "stop"
            self.tokens_generated += len(tokens)
            if s.regex:  # log-probs of the constrained distribution: not the policy's (see policy_loss)
                logprobs = [float("nan")] * len(tokens)
            return GenerationResult(token_ids=tokens, logprobs=logprobs, policy_versions=versions,
                                    finish_reason=finish, engine_index=self.engine_index, resumed=resumed)
        finally:
            self._mark(-1)

    def _decode(self, token_ids: list[int]) -> str:
        """The text vLLM matches stop strings against (special tokens skipped, as vLLM's default)."""
        return self.adapter.tokenizer.decode(token_ids, skip_special_tokens=True)

    async def _request(self, request_id: str, prompt: dict[str, Any], expected: list[int], params: Any,
                       rid: str) -> tuple[list[int], list[float], str]:
        """One engine request streamed to its end: its tokens, their log-probs and the finish reason
        ("abort" when a weight update aborted it; what it generated until then is kept)."""
        tokens: list[int] = []
        logprobs: list[float] = []
        finish = "abort"
        checked = "multi_modal_data" not in prompt  # vLLM's expansion, compared once per request
        self._inflight.add(rid)
        try:
            async for out in self._outputs(prompt, params, rid):
                if not checked and out.prompt_token_ids is not None:
                    if list(out.prompt_token_ids) != expected:
                        raise RuntimeError(f"request {request_id}: vLLM expanded the image "
                                           "placeholders differently from the model adapter")
                    checked = True
                comp = out.outputs[0]
                new = list(comp.token_ids)
                tokens.extend(new)
                for i, tok in enumerate(new):
                    entry = comp.logprobs[i] if comp.logprobs is not None else None
                    logprobs.append(float(entry[tok].logprob) if entry and tok in entry else 0.0)
                if comp.finish_reason is not None:
                    finish = comp.finish_reason
        finally:
            self._inflight.discard(rid)
        return tokens, logprobs, finish

    async def _outputs(self, prompt: dict[str, Any], params: Any, rid: str) -> Any:
        """The engine's output stream; a dead engine takes this actor down, so the run fails naming it
        instead of failing every later prompt one by one."""
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            async for out in self.engine.generate(prompt, params, request_id=rid):
                yield out
        except EngineDeadError:
            import traceback

            traceback.print_exc()
            os._exit(1)

    async def update_weights(self, snapshot: PackedWeights | WeightSnapshot) -> float:
        """Load a new policy version in place; no request starts until it is fully loaded. A restarted
        engine is started here and serves from then on."""

        async def load() -> int:
            await self.transport.apply(self.engine, snapshot)
            return snapshot.version

        return await self._replace_weights(load)

    async def join_weight_group(self, host: str, port: int, rank: int, world_size: int, group_id: str,
                                backend: str) -> None:
        """Join the learner's weight group (`rollout.weight_sync=collective`) as `rank`."""
        await self.start()
        self.weight_group_id = None
        await self.engine.collective_rpc("agentrl_join_group", kwargs={"host": host, "port": port, "rank": rank,
                                                                        "world_size": world_size, "backend": backend})
        self.weight_group_id = group_id

    async def receive_weights(self, bucket_bytes: int) -> float:
        """Load the version the learner broadcasts to the weight group, as `update_weights` loads one."""

        async def load() -> int:
            try:
                [version] = await self.engine.collective_rpc("agentrl_receive", kwargs={"bucket_bytes": bucket_bytes})
            except BaseException:
                self.weight_group_id = None  # the group is rebuilt before the next push
                raise
            return version

        return await self._replace_weights(load)

    async def _replace_weights(self, load: Callable[[], Awaitable[int]]) -> float:
        await self.start()
        t0 = time.perf_counter()
        self._open.clear()
        try:
            if self.on_weight_update == "pause_resume":
                await self._abort_inflight()
            try:
                self.policy_version = await load()
            except BaseException:
                # a load that failed part-way leaves a half-loaded model: serve nothing until a push succeeds
                self._serving.clear()
                raise
            await self._drop_old_caches()
            self._serving.set()
        finally:
            self._open.set()
        return time.perf_counter() - t0

    async def _abort_inflight(self) -> None:
        """Abort our requests until none is left: a request that vLLM had not registered yet when an abort
        was sent survives it (and would run through the reload), so the abort is repeated until every
        aborted request's stream has ended."""
        while self._inflight:
            await self.engine.abort(list(self._inflight))
            await asyncio.sleep(ABORT_POLL_S)

    async def _drop_old_caches(self) -> None:
        """Keep what the old weights computed from serving the new version. The prefix cache is salted by
        version (`cache_salt`), so new requests cannot hit old blocks even while old requests still run
        (`continue`); when none runs the cache is also dropped, and an engine that refuses then fails the
        push, naming itself."""
        if self.adapter.is_multimodal:
            # The worker dropped its encoder outputs and processed-input cache on reload; the scheduler's
            # and the front end's records of them must go too, or the next request that reuses an image
            # fails with "Encoder cache miss".
            await self.engine.reset_mm_cache()
            await self.engine.reset_encoder_cache()
        if self._inflight:  # `continue` with turns running: vLLM would refuse; the salt isolates them
            return
        if not await self.engine.reset_prefix_cache():
            raise RuntimeError(f"generator {self.engine_index}: vLLM refused to drop its prefix cache after the "
                               f"push of policy version {self.policy_version} with no request running")

    def node_id(self) -> str:
        """Ray's id of this engine's node (whether it can map the learner's weight buffer)."""
        from agentrl.actors.weight_buffers import current_node_id

        return current_node_id()

    def weight_group(self) -> str | None:
        """The id of the weight group this engine's model has joined (None: none, or it failed)."""
        return self.weight_group_id

    def stats(self) -> EngineStats:
        """Tokens generated and busy seconds so far, and the loaded policy version."""
        self._mark(0)
        return EngineStats(tokens_generated=self.tokens_generated, busy_s=self.busy_s,
                           policy_version=self.policy_version, serving=self._serving.is_set())

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        self.transport.close()


class GeneratorPool:
    """N engines behind one handle. Picklable, so environment actors each hold a copy.

    A trajectory is pinned to one engine for all its turns (its prefix stays cached there); new
    trajectories go to the engine with the fewest trajectories this client has pinned.
    """

    def __init__(self, handles: list[Any], names: list[str] | None = None) -> None:
        self.handles = handles
        self.names = names  # the engines' actor names, when they have them: a copy travels by name
        self._load = [0] * len(handles)
        self._pinned: dict[str, int] = {}
        self._down_until = [0.0] * len(handles)  # an engine that died is avoided until then (restarting)
        self.rerouted = 0  # turns re-sent to another engine after theirs died

    def __getstate__(self) -> dict[str, Any]:
        return peers_state(self.handles, self.names)  # by name (agentrl/actors/peers.py)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*peers_from_state(state))

    async def start(self) -> None:
        await asyncio.gather(*[h.start.remote() for h in self.handles])

    def pin(self, traj_id: str) -> int:
        if traj_id not in self._pinned:
            now = time.monotonic()
            idx = min(range(len(self.handles)), key=lambda i: (self._down_until[i] > now, self._load[i]))
            self._pinned[traj_id] = idx
            self._load[idx] += 1
        return self._pinned[traj_id]

    def release(self, traj_id: str) -> None:
        idx = self._pinned.pop(traj_id, None)
        if idx is not None:
            self._load[idx] -= 1

    async def generate(self, traj_id: str, request: GenerationRequest) -> GenerationResult:
        """One turn on the trajectory's engine; when that engine dies mid-turn, the whole turn is re-sent
        to another (token-in: the request is complete), up to once per engine."""
        from ray.exceptions import RayActorError

        for attempt in range(len(self.handles) + 1):
            idx = self.pin(traj_id)
            try:
                return await self.handles[idx].generate.remote(request)
            except RayActorError:
                if attempt == len(self.handles):
                    raise
                self._down_until[idx] = time.monotonic() + ENGINE_DOWN_S
                self.release(traj_id)
                self.rerouted += 1
        raise AssertionError("unreachable")

    async def stats(self) -> list[EngineStats]:
        return list(await asyncio.gather(*[h.stats.remote() for h in self.handles]))
