"""The `hierarchical` reward (the improved recipe): a static verifier first, an LLM judge where it gives 0.

1. Static verifier: the normalised prediction equals a gold answer, or `math-verify` proves them equal
   (`1/2` = `0.5`, `\\frac{1}{2}`, `42 apples` = `42`). Math-verify runs in a worker process killed after
   5 s (`agentrl.deadline`): an answer like `$10^{10^{10}}$` scores 0, counted in `verify_timeout`, and
   the actor goes on serving.
2. Where that gives 0, an LLM judge through any OpenAI-compatible chat-completions endpoint, given the
   question, the image (with `judge_images: true`, for a judge that sees images), the gold answers and
   the prediction. It must end its reply with `Verdict: correct` or `Verdict: incorrect`
   (`parse_verdict` also takes yes/no, true/false, 1/0, and a bare one-word reply).

Judgments are cached (SQLite, the `agentrl.web.cache` store) by endpoint, model, prompt and inputs:
every judge reply that came back is cached, parseable or not (at temperature 0 a judge repeats itself);
a failed request is not, so a later run asks again. A reply is cached with the process's secrets
removed (`agentrl.redaction`: the judge's key too, whatever variable holds it). An unparseable reply
scores accuracy 0 and is counted in `judge_unparsed`; a request that failed after its retries scores 0
and is counted in `judge_error`. The search penalty and the format score are those of the other presets.

Options (`reward.options`): `judge` (true; false = verifier only), `judge_url` (base URL ending in /v1),
`judge_model`, `judge_api_key_env` (the name of the environment variable holding the key; the key is
never logged), `judge_timeout_s` (30), `judge_retries` (2), `judge_backoff_s` (0.5), `judge_max_tokens`
(64), `judge_images` (false), `judge_cache` (a SQLite path; "" = $AGENTRL_CACHE/judge.sqlite; "off"),
`format` (`general` or `mmsearch_r1`), and `search_penalty`, `format_penalty`, `use_search_count_penalty`,
`protocol`, `max_turns`, `max_image_searches`, `max_text_searches` as in the other presets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from dataclasses import dataclass
from typing import Any

from agentrl.config import BackendConfig
from agentrl.deadline import DeadlineExceeded, DeadlineWorker, WorkerFailed
from agentrl.records import Observation, RewardInput, RewardResult
from agentrl.redaction import redact
from agentrl.rewards.answers import gold_answers, is_correct, predicted_answer
from agentrl.rewards.mmsearch_r1 import FORMATS, combine, format_score
from agentrl.rewards.registry import register_reward
from agentrl.web.chat import ChatClient
from agentrl.web.http import BackendError

JUDGE_PROMPT = (
    "You are grading an answer to a question{about_image}. Decide whether the prediction means the same "
    "as one of the gold answers (different wording, units or precision that keep the meaning are fine).\n\n"
    "Question: {question}\nGold answers: {golds}\nPrediction: {prediction}\n\n"
    "Reply with one short sentence of reasoning, then a last line that is exactly `Verdict: correct` or "
    "`Verdict: incorrect`."
)
MAX_MATH_CHARS = 200
MATH_TIMEOUT_S = 5.0  # math-verify's own default
_WORDS = {"correct": True, "incorrect": False, "yes": True, "no": False, "true": True, "false": False,
          "1": True, "0": False, "right": True, "wrong": False}
_VERDICT = re.compile(r"verdict\W{0,3}\s*(incorrect|correct|yes|no|true|false|1|0|right|wrong)\b", re.I)
_OPTION_KEYS = {"judge", "judge_url", "judge_model", "judge_api_key_env", "judge_timeout_s", "judge_retries",
                "judge_backoff_s", "judge_max_tokens", "judge_images", "judge_cache", "format", "search_penalty",
                "format_penalty", "use_search_count_penalty", "reward_mode", "protocol", "max_turns",
                "max_image_searches", "max_text_searches"}


def parse_verdict(text: str) -> bool | None:
    """The judge's verdict: the last `Verdict: X` line, else a reply that is one verdict word; None when
    neither is there (an unparseable reply)."""
    found = _VERDICT.findall(text or "")
    if found:
        return _WORDS[found[-1].lower()]
    word = re.sub(r"[^a-z01]", "", (text or "").strip().lower())
    return _WORDS.get(word)


MATH_WORKER = DeadlineWorker()  # this process's math-verify worker (agentrl/deadline.py)


def static_verify(prediction: str | None, golds: list[str]) -> bool:
    """Normalised exact match, or math-verify equality, against any gold answer. Math-verify runs in a
    worker process killed after MATH_TIMEOUT_S (DeadlineExceeded: the caller scores 0 and counts it)."""
    if prediction is None:
        return False
    if is_correct(prediction, golds, "EM"):
        return True
    if len(prediction) > MAX_MATH_CHARS:  # longer is no math answer; spare the worker
        return False
    try:
        return bool(MATH_WORKER.call("agentrl.rewards.math_equal:math_equal", (prediction, golds), MATH_TIMEOUT_S))
    except WorkerFailed:  # math-verify could not read it: not equal
        return False


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's endpoint and resilience, from `reward.options`."""

    url: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5
    max_tokens: int = 64
    images: bool = False
    cache: str = ""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> JudgeConfig | None:
        """None when the judge is off; ValueError naming the bad option otherwise."""
        unknown = sorted(set(options) - _OPTION_KEYS)
        if unknown:
            raise ValueError(f"reward.options.{unknown[0]}: unknown option of the hierarchical reward")
        if options.get("format", "general") not in FORMATS:
            raise ValueError(f"reward.options.format: '{options['format']}' is not one of {', '.join(FORMATS)}")
        if not options.get("judge", True):
            return None
        url = str(options.get("judge_url") or "")
        if not url.startswith(("http://", "https://")):
            raise ValueError("reward.options.judge_url: the hierarchical reward needs an OpenAI-compatible "
                             "endpoint (http(s)://host/v1), or judge: false")
        key_env = str(options.get("judge_api_key_env") or "")
        if key_env and not os.environ.get(key_env):
            raise ValueError(f"reward.options.judge_api_key_env: environment variable {key_env} is not set")
        try:
            return cls(url=url.rstrip("/"), model=str(options.get("judge_model") or ""), api_key_env=key_env,
                       timeout_s=float(options.get("judge_timeout_s", 30.0)),
                       retries=int(options.get("judge_retries", 2)),
                       backoff_s=float(options.get("judge_backoff_s", 0.5)),
                       max_tokens=int(options.get("judge_max_tokens", 64)),
                       images=bool(options.get("judge_images", False)), cache=str(options.get("judge_cache", "")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward.options: bad judge option ({e})") from None


@dataclass
class Judgment:
    """One judge call: the verdict (None: unparseable or failed), the raw reply, where it came from."""

    verdict: bool | None
    reply: str = ""
    cached: bool = False
    error: str = ""


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint through the one chat client (`agentrl.web.chat`)."""

    def __init__(self, cfg: JudgeConfig) -> None:
        self.cfg = cfg
        http = BackendConfig(timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.backoff_s,
                             breaker_failures=1 << 30)
        self.client = ChatClient("judge", cfg.url, cfg.model, http, api_key_env=cfg.api_key_env)
        self.cache = None
        if cfg.cache != "off":
            from agentrl.paths import cache_root
            from agentrl.web.cache import ToolCache

            self.cache = ToolCache(cfg.cache or str(cache_root() / "judge.sqlite"))

    def messages(self, question: str, golds: list[str], prediction: str, images: list[bytes]) -> list[dict]:
        see = self.cfg.images and bool(images)
        text = JUDGE_PROMPT.format(about_image=" about the image" if see else "", question=question,
                                   golds="; ".join(golds), prediction=prediction)
        if not see:
            return [{"role": "user", "content": text}]
        parts: list[dict] = [{"type": "image_url", "image_url": {"url": _data_url(img)}} for img in images]
        return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]

    async def judge(self, question: str, golds: list[str], prediction: str, images: list[bytes]) -> Judgment:
        from agentrl.web.cache import cache_key

        key = cache_key("llm_judge", f"{self.cfg.url}|{self.cfg.model}",
                        {"prompt": JUDGE_PROMPT, "question": question, "golds": golds, "prediction": prediction,
                         "images": self.cfg.images}, images if self.cfg.images else [])
        if self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                return Judgment(parse_verdict(hit.text), hit.text, cached=True)
        messages = self.messages(question, golds, prediction, images)  # base64 images: only when asking
        try:
            # an endpoint may echo the request (its key included): scrubbed before it is cached or returned
            reply = redact(await self.client.complete(messages, max_tokens=self.cfg.max_tokens))
        except BackendError as e:
            return Judgment(None, error=str(e))
        if self.cache is not None:
            await self.cache.put(key, "llm_judge", Observation(reply))
        return Judgment(parse_verdict(reply), reply)


def _data_url(image: bytes) -> str:
    mime = "image/png" if image[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


_JUDGES: dict[JudgeConfig, LLMJudge] = {}


def get_judge(cfg: JudgeConfig) -> LLMJudge:
    """One judge (HTTP session, cache handle) per configuration per process."""
    if cfg not in _JUDGES:
        _JUDGES[cfg] = LLMJudge(cfg)
    return _JUDGES[cfg]


@register_reward("hierarchical")
async def hierarchical_reward(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """Static verifier, then the LLM judge where it gives 0; the search penalty and format of the presets."""
    cfg = JudgeConfig.from_options(options)
    fmt, searches = format_score(inp.turns, options, options.get("format", "general"))
    golds = gold_answers(inp.ground_truth, inp.candidate_answers)
    answer = predicted_answer(inp)
    extra = {"verified": 0.0, "verify_timeout": 0.0, "judged": 0.0, "judge_unparsed": 0.0, "judge_error": 0.0}
    acc = 0.0
    try:
        verified = await asyncio.to_thread(static_verify, answer, golds)  # the actor's loop keeps serving
    except DeadlineExceeded:
        verified, extra["verify_timeout"] = False, 1.0
    if verified:
        acc, extra["verified"] = 1.0, 1.0
    elif answer is not None and answer.strip() and cfg is not None:
        j = await get_judge(cfg).judge(inp.question, golds, answer, list(inp.images))
        extra["judged"] = 1.0
        extra["judge_error"] = float(bool(j.error))
        extra["judge_unparsed"] = float(not j.error and j.verdict is None)
        acc = 1.0 if j.verdict else 0.0
    result = combine(acc, fmt, searches, options)
    result.components.update(extra)
    return result


hierarchical_reward.check_options = JudgeConfig.from_options  # type: ignore[attr-defined]
