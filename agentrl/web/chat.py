"""One client for OpenAI-compatible chat-completions endpoints (the text-search summariser, the LLM judge).

Timeouts, retries and limits come from `web.http.Backend`; the API key is read from the environment
variable the caller names, at request time, and is never logged. A reply without text (no `choices`, a
wrong type) is a `BackendError`, like any other failed call, so callers handle one kind of failure.
"""

from __future__ import annotations

import os
from typing import Any

from agentrl.config import BackendConfig
from agentrl.redaction import register_key_variable
from agentrl.web.http import Backend, BackendError


class ChatClient:
    """`complete(messages)` against `{base_url}/chat/completions` of an OpenAI-compatible server."""

    def __init__(self, name: str, base_url: str, model: str, http: BackendConfig, api_key_env: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        register_key_variable(api_key_env)  # its value is redacted from replies, errors and caches
        self.http = Backend(name, http)

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def complete(self, messages: list[dict[str, Any]], max_tokens: int, temperature: float = 0.0) -> str:
        """The first choice's text; BackendError when the call fails or the reply has no text."""
        data = await self.http.request("POST", f"{self.base_url}/chat/completions", headers=self.headers(), json={
            "model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens})
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.http.name}: unexpected response shape (no choices[0].message.content)") from None
        if content is not None and not isinstance(content, str):
            raise BackendError(f"{self.http.name}: unexpected response shape (content is not text)")
        return content or ""

    async def close(self) -> None:
        await self.http.close()
