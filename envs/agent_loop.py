"""The multi-turn loop of one trajectory: generate -> parse the action -> call the tool -> append
the observation as tokens with loss mask 0 -> repeat until an answer, `max_turns`, or the token budget.

Works on token ids throughout: model tokens come back from the generator as ids and are stored as
they are; observations are tokenised once, here, with the chat template's own turn markers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable  # noqa: UP035

from agentrl.config import EnvConfig
from agentrl.envs.chat_format import IMAGE_SLOT, ChatFormat, outside_text
from agentrl.envs.protocol import Action, Protocol
from agentrl.envs.tool import IMAGE_MARKER, Observation, Tool, TrajectoryState, call_deadline
from agentrl.grammar import IMAGE_SEARCH_TOOL, INVALID_ACTION_OBSERVATION, OVER_LIMIT_OBSERVATION, TEXT_SEARCH_TOOL
from agentrl.images import ImageError
from agentrl.models.base import ModelAdapter
from agentrl.records import DataRow, GenerationRequest, GenerationResult, SamplingConfig, ToolCall, Trajectory
from agentrl.redaction import redact
from agentrl.web.cache import ToolCache, cache_key

GenerateFn = Callable[[GenerationRequest], Awaitable[GenerationResult]]


@dataclass
class RolloutContext:
    """What a trajectory needs from its environment actor."""

    chat: ChatFormat
    protocol: Protocol
    tools: dict[str, Tool]
    env: EnvConfig
    sampling: SamplingConfig
    eos_token_id: int | None
    cache: ToolCache | None = None
    cache_mode: str = "on"
    adapter: ModelAdapter = field(default_factory=lambda: ModelAdapter(""))  # text-only unless set

    @property
    def supports_images(self) -> bool:
        """A vision-language model sees images; a text-only one sees titles, not thumbnails."""
        return self.adapter.is_multimodal


def initial_prompt(row: DataRow, ctx: RolloutContext) -> tuple[list[int], list[bytes]]:
    """Prompt ids (image placeholders expanded) and the row's images resized to the input budget.

    Raises ImageError for unreadable image bytes and ValueError for too many images, naming the row.
    """
    question = outside_text(row.question)
    if not ctx.supports_images or not row.images:
        return ctx.chat.prompt_ids(ctx.protocol.system_prompt, question), []
    cap = ctx.adapter.vision.max_images_per_trajectory
    if len(row.images) > cap:
        raise ValueError(f"row {row.row_id}: {len(row.images)} images exceed "
                         f"model.vision.max_images_per_trajectory={cap}")
    images = []
    for k, data in enumerate(row.images):
        try:
            images.append(ctx.adapter.prepare_image(data, "input"))
        except ImageError as e:
            raise ImageError(f"row {row.row_id}: images[{k}]: {e}") from None
    ids = ctx.chat.prompt_ids(ctx.protocol.system_prompt, question, len(images))
    return ctx.adapter.expand_placeholders(ids, images), images


def observation_images(text: str, images: list[bytes], ctx: RolloutContext,
                       held: int) -> tuple[str, list[bytes], str | None]:
    """Place a tool's images in its observation: each IMAGE_MARKER becomes an IMAGE_SLOT, which
    `ChatFormat.encode_text` turns into the model's image placeholder.

    Thumbnails are resized to their budget; past `max_images_per_trajectory` (counting `held`, the
    images the trajectory already has) they are left out with a note. Returns the text, the images to
    append, and an error when an image is unreadable (the caller then shows an error observation).
    """
    text = outside_text(text)
    if not ctx.supports_images:
        return text.replace(IMAGE_MARKER, "").replace("image: \n", ""), [], None
    room = ctx.adapter.vision.max_images_per_trajectory - held
    pieces = text.split(IMAGE_MARKER)
    out, kept = [pieces[0]], []
    for k, piece in enumerate(pieces[1:]):
        if k < len(images) and len(kept) < room:
            try:
                kept.append(ctx.adapter.prepare_image(images[k], "thumbnail"))
            except ImageError as e:
                return "", [], f"image {k + 1} of the result: {e}"
            out.append(IMAGE_SLOT)
        else:
            out.append("[image left out: image limit reached]" if k < len(images) else "")
        out.append(piece)
    return "".join(out), kept, None


def scrubbed(obs: Observation) -> Observation:
    """The observation with the process's secrets removed from its text (a page may echo a request's
    key): the one place tool results pass before the cache stores them or the model sees them."""
    text = redact(obs.text)
    return obs if text == obs.text else replace(obs, text=text)


async def _run_tool(tool: Tool, args: dict[str, Any], state: TrajectoryState, timeout_s: float,
                    cache: ToolCache | None, cache_mode: str) -> Observation:
    key = None
    if cache is not None and tool.cacheable:
        key = cache_key(tool.name, tool.cache_identity(state), args)
        hit = await cache.get(key)
        if hit is not None:
            hit.cached = True
            return scrubbed(hit)
        if cache_mode == "replay_only":
            return Observation(f"No cached {tool.name} result (replay-only run).", ok=False,
                               error="not in cache (replay_only)")
    async with asyncio.timeout(timeout_s):  # unlike wait_for, no extra task per call
        with call_deadline(timeout_s):  # the tool's fetches share it (within_call_deadline)
            obs = scrubbed(await tool.run(args, state))
    if key is not None and obs.ok:
        await cache.put(key, tool.name, obs)
    return obs


async def call_tool(tool: Tool, argument: str, state: TrajectoryState, timeout_s: float,
                    cache: ToolCache | None = None, cache_mode: str = "on") -> tuple[Observation, ToolCall]:
    """Run one tool call through the cache; errors and timeouts become an error observation."""
    t0 = time.perf_counter()
    try:
        args = tool.parse_args(argument)
    except Exception as e:  # a malformed argument is the model's mistake: tell it
        obs = Observation(f"Invalid arguments for {tool.name}: {e}", ok=False, error=str(e))
        return obs, ToolCall(tool.name, {"raw": argument}, 0.0, False, obs.error)
    try:
        obs = await _run_tool(tool, args, state, timeout_s, cache, cache_mode)
    except TimeoutError:
        obs = Observation(f"The {tool.name} call timed out.", ok=False, error="timeout")
    except Exception as e:
        obs = Observation(f"The {tool.name} call failed.", ok=False, error=redact(f"{type(e).__name__}: {e}"))
    latency = time.perf_counter() - t0
    state.tool_counts[tool.name] += 1
    state.results.append((tool.name, obs))
    return obs, ToolCall(tool.name, args, latency, obs.ok, obs.error, obs.cached)


def tool_limit(env: EnvConfig, tool: str) -> int | None:
    return {IMAGE_SEARCH_TOOL: env.max_image_searches, TEXT_SEARCH_TOOL: env.max_text_searches}.get(tool)


def image_token_cut(token_ids: list[int], adapter: ModelAdapter) -> int | None:
    """Where a model turn's first image placeholder token is, if it wrote one (None: it did not)."""
    return next((k for k, t in enumerate(token_ids) if adapter.is_image_token(t)), None)


async def model_turn(traj: Trajectory, turn: int, budget: int, ctx: RolloutContext,
                     generate: GenerateFn) -> tuple[GenerationResult, Action]:
    """Generate one model turn of at most `budget` tokens, append it (mask 1) and parse its action.

    Sets `traj.truncated` to whether this turn was cut (it stopped at `budget`: `max_tokens_per_turn` or
    the total budget), so at the end it says whether the LAST model turn was cut (learner.overlong_filter).
    An image placeholder token written by the model is an invalid action: the turn is kept up to it,
    since a placeholder without an image would fail the engine's next prompt and the learner's forward.
    """
    env, s = ctx.env, ctx.sampling
    request = GenerationRequest(
        request_id=f"{traj.traj_id}-t{turn}",
        prompt_ids=traj.prompt_ids + traj.response_ids,
        sampling=SamplingConfig(max_tokens=budget, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                stop=ctx.protocol.stop, seed=s.seed,
                                regex=(env.turn_regex[turn] or None) if turn < len(env.turn_regex) else None),
        images=list(traj.images),
    )
    result = await generate(request)
    cut = image_token_cut(result.token_ids, ctx.adapter)
    traj.truncated = result.finish_reason == "length" and cut is None
    if cut is not None:
        result = replace(result, token_ids=result.token_ids[:cut], logprobs=result.logprobs[:cut],
                         policy_versions=result.policy_versions[:cut])
    traj.append(result.token_ids, trainable=True, logprobs=result.logprobs, versions=result.policy_versions)
    text = ctx.chat.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    traj.turn_texts.append(text)
    if cut is not None:
        return result, Action("invalid", error="an image placeholder token in a model turn")
    return result, ctx.protocol.parse(text)


async def run_trajectory(traj: Trajectory, row: DataRow, ctx: RolloutContext, generate: GenerateFn) -> Trajectory:
    """Run one trajectory to its end and return it, filled in (reward excluded).

    `traj.truncated` is set when the last model turn was cut at `max_tokens_per_turn` or at the total
    budget; a trajectory ended because an observation filled the budget is not truncated.
    """
    env = ctx.env
    # as in the prompt: the question is outside text (the observations repeat it)
    question = outside_text(row.question)
    state = TrajectoryState(question=question, images=list(row.images), image_urls=list(row.image_urls),
                            data_id=row.data_id)
    for turn in range(env.max_turns):
        budget = min(env.max_tokens_per_turn, env.max_total_tokens - len(traj.response_ids))
        if budget <= 0:  # an observation filled the budget: no model turn was cut by it
            traj.finish_reason = "max_total_tokens"
            return traj
        result, action = await model_turn(traj, turn, budget, ctx, generate)
        if action.kind == "answer":
            traj.answer, traj.finish_reason = action.argument, "answer"
            return traj
        if len(traj.response_ids) >= env.max_total_tokens:
            traj.finish_reason = "max_total_tokens"
            return traj
        if turn == env.max_turns - 1:
            break
        limit = tool_limit(env, action.tool) if action.kind == "tool" else None
        if action.kind == "tool" and action.tool in ctx.tools and (
                limit is None or state.tool_counts[action.tool] < limit):
            obs, record = await call_tool(ctx.tools[action.tool], action.argument, state, env.tool_timeout_s,
                                          ctx.cache, ctx.cache_mode)
            traj.tool_calls.append(record)
            obs_text = ctx.chat.truncate(obs.text, env.max_observation_tokens)
            obs_text, new_images, image_error = await asyncio.to_thread(  # resizing: off the event loop
                observation_images, obs_text, obs.images, ctx, len(traj.images))
            if image_error is not None:  # a corrupt image from a tool: the model is told, the run goes on
                record.ok, record.error = False, image_error
                obs_text = f"The {action.tool} call returned an unreadable image."
        else:
            traj.invalid_actions += 1
            if env.on_invalid_action == "end":
                traj.finish_reason = "invalid_action"
                return traj
            over = action.kind == "tool" and action.tool in ctx.tools
            obs_text = OVER_LIMIT_OBSERVATION.format(tool=action.tool) if over else INVALID_ACTION_OBSERVATION
            new_images = []
        ended = bool(result.token_ids) and result.token_ids[-1] == ctx.eos_token_id
        obs_ids = ctx.chat.observation_ids(ctx.protocol.observation(obs_text, question), ended,
                                           ctx.adapter.image_placeholder)
        traj.append(ctx.adapter.expand_placeholders(obs_ids, new_images), trainable=False)
        traj.images.extend(new_images)
    traj.finish_reason = "max_turns"
    return traj
