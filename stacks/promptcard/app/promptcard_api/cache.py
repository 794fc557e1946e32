"""Redis read-through cache. Redis is optional: every error degrades to a cache miss.

Keys carry generation counters that writers bump *after* commit. A reader fetches the generation
before it reads the database and stores its result under that generation, so a result read
before a concurrent write can never be served after that write (no stale re-population race).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import metrics

log = logging.getLogger("promptcard_api.cache")
PREFIX = "pc:v1"
# Generation keys outlive every entry keyed by them, so an evicted/expired counter restarting
# at 0 cannot resurrect an old entry.
GEN_TTL_FACTOR = 10


def card_gen_key(card_id: str) -> str:
    return f"{PREFIX}:card:{card_id}:gen"


def card_key(card_id: str, gen: int) -> str:
    return f"{PREFIX}:card:{card_id}:{gen}"


LIST_GEN_KEY = f"{PREFIX}:list:gen"
LIST_LSN_KEY = f"{PREFIX}:list:lsn"


def list_key(gen: int, params: Mapping[str, Any]) -> str:
    # Canonical JSON so equal queries share a key whatever the parameter order.
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    return f"{PREFIX}:list:{gen}:{digest}"


def _int(raw: Any) -> int:
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0


def make_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        # One immediate retry on a dropped connection (e.g. after a Redis restart); never on a
        # timeout, which would only double the wait.
        retry_on_error=[redis.exceptions.ConnectionError],
        retry=Retry(NoBackoff(), 1),
        client_name="promptcard-api",
        max_connections=64,
    )


class Cache:
    BREAKER_S = 2.0  # after an error, skip cache reads for this long instead of waiting on Redis

    def __init__(self, client: Any | None, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._last_log = 0.0

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def _usable(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _failed(self, op: str, exc: Exception) -> None:
        metrics.CACHE_OPS.labels(op=op, result="error").inc()
        now = time.monotonic()
        with self._lock:
            self._down_until = now + self.BREAKER_S
            noisy = now - self._last_log < 10.0
            if not noisy:
                self._last_log = now
        if not noisy:  # rate-limited: an outage must not flood the logs
            log.warning("redis %s failed (%s); serving from the database", op, type(exc).__name__)

    # -- cards -----------------------------------------------------------------------------------
    def get_card(self, card_id: str) -> tuple[bytes | None, int | None]:
        """(cached body or None, generation to store a fresh read under; None = don't store)."""
        if not self._usable():
            return None, None
        try:
            gen = _int(self.client.get(card_gen_key(card_id)))
            body = self.client.get(card_key(card_id, gen))
        except Exception as exc:  # any client error is a miss, never a failed request
            self._failed("get", exc)
            return None, None
        metrics.CACHE_OPS.labels(op="get", result="hit" if body is not None else "miss").inc()
        return body, gen

    def set_card(self, card_id: str, gen: int | None, body: bytes) -> None:
        if gen is None or not self._usable():
            return
        try:
            self.client.set(card_key(card_id, gen), body, ex=self.ttl_s)
        except Exception as exc:
            self._failed("set", exc)

    # -- lists -----------------------------------------------------------------------------------
    def get_list(self, params: Mapping[str, Any]) -> tuple[bytes | None, int | None, str | None]:
        """(cached body, generation to store under, min replica WAL position for a fresh read)."""
        if not self._usable():
            return None, None, None
        try:
            raw_gen, raw_lsn = self.client.mget([LIST_GEN_KEY, LIST_LSN_KEY])
            gen = _int(raw_gen)
            body = self.client.get(list_key(gen, params))
        except Exception as exc:
            self._failed("get", exc)
            return None, None, None
        metrics.CACHE_OPS.labels(op="get", result="hit" if body is not None else "miss").inc()
        lsn = raw_lsn.decode() if isinstance(raw_lsn, bytes) else raw_lsn
        return body, gen, lsn

    def set_list(self, gen: int | None, params: Mapping[str, Any], body: bytes) -> None:
        if gen is None or not self._usable():
            return
        try:
            self.client.set(list_key(gen, params), body, ex=self.ttl_s)
        except Exception as exc:
            self._failed("set", exc)

    # -- invalidation ----------------------------------------------------------------------------
    def invalidate(self, card_id: str | None, lsn: str | None = None) -> None:
        """After a committed write. Always attempted (even with the breaker open): skipping it
        could leave a stale entry for up to the TTL."""
        if self.client is None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            if card_id is not None:
                pipe.incr(card_gen_key(card_id))
                pipe.expire(card_gen_key(card_id), self.ttl_s * GEN_TTL_FACTOR)
            pipe.incr(LIST_GEN_KEY)
            if lsn:
                pipe.set(LIST_LSN_KEY, lsn)
            results = pipe.execute()
            if card_id is not None:
                # The previous generation's entry is unreachable now; drop it to free memory.
                self.client.delete(card_key(card_id, _int(results[0]) - 1))
            metrics.CACHE_OPS.labels(op="invalidate", result="ok").inc()
        except Exception as exc:
            self._failed("invalidate", exc)

    def ping(self) -> None:
        if self.client is None:
            raise RuntimeError("REDIS_URL not configured")
        self.client.ping()
