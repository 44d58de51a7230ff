"""Secrets come from the environment and never reach logs, metrics, caches or observations.

A secret is the value of one of the tools' key variables (`SECRET_ENV`), of a variable a client was
configured to read its key from (`register_key_variable`: `reward.options.judge_api_key_env` may name any
variable, `JUDGE_CRED` or `X`), or of any environment variable whose name says it holds one (KEY, TOKEN,
SECRET, PASSWORD, CREDENTIAL as a word of the name, any case: `HF_TOKEN`, `MY_JUDGE_KEY`, `APIKEY`, not
`TOKENIZERS_PARALLELISM`) and is at least `MIN_SECRET_CHARS` long. Values are redacted, whatever the name.
"""

from __future__ import annotations

import functools
import os
import re

SECRET_ENV = ("WANDB_API_KEY", "SERPAPI_API_KEY", "JINA_API_KEY", "OPENAI_API_KEY")
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)S?(_|$)", re.I)
MIN_SECRET_CHARS = 8  # shorter values of secret-looking names (flags, "true", ports) are not keys
_QUERY_KEY = re.compile(r"(api[_-]?key=)[^&\s\"']+", re.I)
_KEY_VARIABLES: set[str] = set()  # variables this process reads keys from, by configuration


def register_key_variable(name: str) -> None:
    """A client reads its key from variable `name`: its value is a secret in this process from now on."""
    if name:
        _KEY_VARIABLES.add(name)


@functools.lru_cache(maxsize=4096)
def secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    return name in SECRET_ENV or SECRET_NAME.search(name) is not None


def secret_values() -> list[str]:
    """The secrets set in the environment now, longest first (a secret that contains another is removed
    whole). Read on every call, so a key set later is covered; cheap: one pass over the names (each
    name's test is cached), values read only for secret names."""
    values = (os.environ.get(name, "") for name in list(os.environ) if secret_name(name))
    found = {v for v in values if len(v) >= MIN_SECRET_CHARS}
    # the tools' and the configured clients' keys: secrets by where they are used, at any length
    found.update(v for v in map(os.environ.get, (*SECRET_ENV, *_KEY_VARIABLES)) if v and len(v) >= 4)
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """Remove the values of secret environment variables, and `api_key=` query values, from a string."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return _QUERY_KEY.sub(r"\1***", text)
