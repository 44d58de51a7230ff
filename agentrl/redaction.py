"""Secrets come from the environment and never reach logs, metrics, caches or observations."""

from __future__ import annotations

import os
import re

SECRET_ENV = ("WANDB_API_KEY", "SERPAPI_API_KEY", "JINA_API_KEY", "OPENAI_API_KEY")


def redact(text: str) -> str:
    """Remove the values of known secret environment variables from a string."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(api[_-]?key=)[^&\s\"']+", r"\1***", text, flags=re.I)
