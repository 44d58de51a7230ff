"""The product's generator with two test hooks (tests/test_engine_exactness.py)."""

from __future__ import annotations

from typing import Any

from agentrl.actors.generator import GeneratorActor


class SteerableGenerator(GeneratorActor):
    """The product's generator; `abort_next_after(n)` makes the next request end after n tokens with the
    finish reason of a weight update's abort (it then resumes as after a push)."""

    cut_after: int | None = None

    def set_on_weight_update(self, mode: str) -> None:
        self.on_weight_update = mode

    def abort_next_after(self, n: int) -> None:
        self.cut_after = n

    async def _request(self, request_id: str, prompt: dict[str, Any], expected: list[int], params: Any,
                       rid: str) -> tuple[list[int], list[float], str]:
        n, self.cut_after = self.cut_after, None
        if n is None or n >= params.max_tokens:
            return await super()._request(request_id, prompt, expected, params, rid)
        params = params.clone()
        params.max_tokens = n
        tokens, logprobs, finish = await super()._request(request_id, prompt, expected, params, rid)
        return tokens, logprobs, "abort" if finish == "length" else finish
