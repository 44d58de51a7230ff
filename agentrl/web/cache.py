"""A content-addressed on-disk cache of tool results, shared by all actors on a machine.

SQLite in WAL mode: many readers and writers across processes. A key hashes the tool, its identity
(everything besides the arguments that changes a result: backend, base URL, corpus, limits, the input
image; `Tool.cache_identity`), and the normalised arguments (never an API key); values are JSON (images
base64), so reading the cache never unpickles anything.

A file that is not a SQLite database, or a symbolic link in the cache's place, fails with one line naming
it; a read-only cache (for `tools.cache.mode=replay_only`) is read and never written; an entry that does
not decode, or a damaged page of the file, is a counted miss (`corrupt`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from agentrl.config import CacheConfig
from agentrl.errors import UserError
from agentrl.paths import cache_root
from agentrl.records import Observation


class CacheError(UserError):
    """The cache file cannot be used (one line, naming the file)."""


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def image_hash(images: Sequence[Any]) -> str:
    """A short hash of a list of images (bytes, or anything else by its repr, such as a URL); "" for none.
    Each item is hashed with its length first, so [b"ab", b"c"] and [b"a", b"bc"] differ."""
    h = hashlib.sha256()
    for img in images:
        data = img if isinstance(img, bytes) else repr(img).encode()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16] if images else ""


def content_hash(data: bytes | str) -> str:
    """A short content hash for cache identities (images, prompts, corpora)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:32]


def cache_key(tool: str, identity: Any, args: dict[str, Any], images: Sequence[Any] = ()) -> str:
    """The one key function: the tool's name, its identity (a JSON value), the normalised arguments
    (case and spacing do not matter), and the hash of any images the caller passes."""
    blob = json.dumps({"tool": tool, "backend": identity, "args": _normalise(args), "image": image_hash(images)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_path() -> str:
    return str(cache_root() / "tools.sqlite")


class ToolCache:
    """get/put of observations by key; `hits`, `misses` and `corrupt` (entries that did not decode,
    counted as misses too) count lookups; `put_errors` counts results that could not be stored.
    `read_only` opens an existing file and never writes its data (puts are no-ops); a file this process
    may not write (or in a folder it may not write) is opened so without asking."""

    def __init__(self, path: str = "", read_only: bool = False) -> None:
        self.path = path or default_path()
        # a link planted where the cache lives would make every run write (or read) where it points
        links = [p for p in (self.path, f"{self.path}-wal", f"{self.path}-shm") if os.path.islink(p)]
        if links:
            raise CacheError(f"tool cache {links[0]}: a symbolic link; the cache opens only its own files")
        folder = os.path.dirname(os.path.abspath(self.path))
        writable = os.access(folder, os.W_OK) and os.access(self.path, os.W_OK)
        self.read_only = read_only or (os.path.exists(self.path) and not writable)
        try:
            self._db = self._open_read_only() if self.read_only else self._open()
            self._has_table = self._table_exists(self._db)
        except sqlite3.Error as e:
            raise CacheError(f"tool cache {self.path}: not a usable SQLite database ({e})") from None
        self._lock = asyncio.Lock()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.put_errors = 0

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, tool TEXT, value TEXT, created REAL)")
        db.commit()
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        if not os.path.isfile(self.path):
            raise sqlite3.OperationalError("no such file")
        uri = f"file:{quote(os.path.abspath(self.path))}"
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        try:
            self._table_exists(db)  # connecting is lazy: this is where a read-only open fails
        except sqlite3.OperationalError:  # WAL mode in a folder we cannot write: no shared-memory file
            db.close()
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
        return db

    @staticmethod
    def _table_exists(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'").fetchone() is not None

    @staticmethod
    def _encode(obs: Observation) -> str:
        return json.dumps({"text": obs.text, "images": [base64.b64encode(i).decode() for i in obs.images]})

    @staticmethod
    def _decode(value: str) -> Observation:
        d = json.loads(value)
        text, images = d["text"], [base64.b64decode(i, validate=True) for i in d["images"]]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        return Observation(text, images)

    def get_sync(self, key: str) -> Observation | None:
        row = None
        try:
            if self._has_table:  # a read-only cache may never have had an entry
                row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:  # a damaged page ("disk image is malformed"): the call goes to the web
            self.corrupt += 1
            self.misses += 1
            return None
        if row is None:
            self.misses += 1
            return None
        try:
            obs = self._decode(row[0])
        except (ValueError, KeyError, TypeError):  # bad JSON or base64 (ValueErrors), a wrong shape
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return obs

    def counters(self) -> dict[str, int]:
        """The lookup and store counters so far (the environment actor reports them as tool/cache/*)."""
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "put_errors": self.put_errors}

    def put_sync(self, key: str, tool: str, obs: Observation) -> None:
        if self.read_only:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                             (key, tool, self._encode(obs), time.time()))
            self._db.commit()
        except sqlite3.Error:  # locked past the timeout, disk full: the result still reaches the model
            self.put_errors += 1

    async def get(self, key: str) -> Observation | None:
        async with self._lock:
            return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: str, tool: str, obs: Observation) -> None:
        async with self._lock:
            await asyncio.to_thread(self.put_sync, key, tool, obs)

    def close(self) -> None:
        self._db.close()


def open_tool_cache(cfg: CacheConfig) -> ToolCache | None:
    """The run's tool cache as `tools.cache` configures it: none when off, read-only for replay_only (a cache
    that cannot be written can still be replayed). A corrupt file fails here with one line naming it."""
    if cfg.mode == "off":
        return None
    return ToolCache(cfg.path, read_only=cfg.mode == "replay_only")
