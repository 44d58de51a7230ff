"""A content-addressed on-disk cache of tool results, shared by all actors on a machine.

SQLite in WAL mode: many readers and writers across processes. Keys hash the tool, its backend, the
normalised arguments and the input image (never an API key); values are JSON (images base64), so
reading the cache never unpickles anything.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import time
from typing import Any

from agentrl.paths import cache_root
from agentrl.records import Observation


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def image_hash(images: list[Any]) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(img if isinstance(img, bytes) else repr(img).encode())
    return h.hexdigest()[:16] if images else ""


def cache_key(tool: str, backend: str, args: dict[str, Any], images: list[Any]) -> str:
    blob = json.dumps({"tool": tool, "backend": backend, "args": _normalise(args), "image": image_hash(images)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_path() -> str:
    return str(cache_root() / "tools.sqlite")


class ToolCache:
    """get/put of observations by key; `hits` and `misses` count lookups."""

    def __init__(self, path: str = "") -> None:
        self.path = path or default_path()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, tool TEXT, value TEXT, "
                         "created REAL)")
        self._db.commit()
        self._lock = asyncio.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _encode(obs: Observation) -> str:
        return json.dumps({"text": obs.text, "images": [base64.b64encode(i).decode() for i in obs.images]})

    @staticmethod
    def _decode(value: str) -> Observation:
        d = json.loads(value)
        return Observation(d["text"], [base64.b64decode(i) for i in d["images"]])

    def get_sync(self, key: str) -> Observation | None:
        row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return self._decode(row[0])

    def put_sync(self, key: str, tool: str, obs: Observation) -> None:
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                         (key, tool, self._encode(obs), time.time()))
        self._db.commit()

    async def get(self, key: str) -> Observation | None:
        async with self._lock:
            return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: str, tool: str, obs: Observation) -> None:
        async with self._lock:
            await asyncio.to_thread(self.put_sync, key, tool, obs)

    def close(self) -> None:
        self._db.close()
