"""Pure units: config, health aggregation, cache key/generation logic (fake Redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from promptcard_api import cache as cache_mod
from promptcard_api import health
from promptcard_api.cache import Cache
from promptcard_api.config import Settings, redact_url


# -- config -----------------------------------------------------------------------------------
def test_secret_file_wins_and_is_stripped(tmp_path: Any) -> None:
    f = tmp_path / "db"
    f.write_text("postgresql://u:p@db/app\n")
    s = Settings.from_env({"DATABASE_URL": "ignored", "DATABASE_URL_FILE": str(f)})
    assert s.database_url == "postgresql://u:p@db/app"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.redis_url is None
    assert s.llm_url is None
    assert s.llm_model == "llama3.2:1b"
    assert s.health_check_timeout_s == 2.0
    assert s.cache_ttl_s == 30


def test_llm_url_trailing_slash_removed() -> None:
    assert Settings.from_env({"LLM_URL": "http://ollama:11434/"}).llm_url == "http://ollama:11434"


@pytest.mark.parametrize("bad", ["0", "-1", "abc"])
def test_bad_numbers_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"CACHE_TTL_S|could not convert"):
        Settings.from_env({"CACHE_TTL_S": bad})


def test_redact_url_hides_credentials() -> None:
    out = redact_url("redis://:s3cret@redis:6379/0")
    assert "s3cret" not in out
    assert out == "redis://***@redis:6379/0"
    assert "pw" not in redact_url("postgresql://app:pw@db:5432/app?sslmode=require")
    assert redact_url(None) == "<unset>"


# -- health -----------------------------------------------------------------------------------
def _c(name: str, status: str) -> dict[str, Any]:
    return {"name": name, "status": status}


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([_c("database", "healthy"), _c("redis", "healthy"), _c("llm", "healthy")], ("healthy", 200)),
        ([_c("database", "healthy"), _c("redis", "unhealthy"), _c("llm", "healthy")], ("degraded", 200)),
        ([_c("database", "healthy"), _c("redis", "healthy"), _c("llm", "degraded")], ("degraded", 200)),
        ([_c("database", "unhealthy"), _c("redis", "healthy"), _c("llm", "healthy")], ("unhealthy", 503)),
        ([_c("database", "degraded"), _c("redis", "healthy")], ("unhealthy", 503)),
        ([_c("redis", "healthy")], ("unhealthy", 503)),  # no database check at all
    ],
)
def test_overall(checks: list[dict[str, Any]], expected: tuple) -> None:
    assert health.overall(checks) == expected


def test_checks_run_concurrently_and_time_out() -> None:
    def slow() -> tuple:
        time.sleep(1.0)
        return health.HEALTHY, None

    def boom() -> tuple:
        raise ConnectionError("refused\nsecond line")

    start = time.perf_counter()
    body, code = asyncio.run(
        health.comprehensive(
            {"database": lambda: (health.HEALTHY, None), "redis": slow, "llm": boom},
            timeout_s=0.3,
            static={"extra": (health.DEGRADED, "static")},
        )
    )
    assert time.perf_counter() - start < 0.9  # bounded by the timeout, not the slow probe
    by = {c["name"]: c for c in body["checks"]}
    assert [c["name"] for c in body["checks"]] == ["database", "redis", "llm", "extra"]
    assert by["redis"]["status"] == "unhealthy"
    assert "timed out" in by["redis"]["details"]
    assert by["llm"]["details"] == "ConnectionError: refused"  # first line only
    assert set(by["database"]) == {"name", "status", "response_time_ms", "details"}
    assert (body["status"], code) == ("degraded", 200)


# -- cache ------------------------------------------------------------------------------------
class FakeRedis:
    """Just enough of redis.Redis for Cache; `fail` makes every call raise like a dead server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int | None] = {}
        self.fail = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.fail:
            raise redis.exceptions.ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.data.get(key)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    def set(self, key: str, value: Any, ex: int | None = None) -> None:
        self._check()
        self.data[key] = value if isinstance(value, bytes) else str(value).encode()
        self.ttl[key] = ex

    def incr(self, key: str) -> int:
        self._check()
        n = int(self.data.get(key, b"0")) + 1
        self.data[key] = str(n).encode()
        return n

    def expire(self, key: str, seconds: int) -> None:
        self._check()
        self.ttl[key] = seconds

    def delete(self, key: str) -> None:
        self._check()
        self.data.pop(key, None)

    def ping(self) -> bool:
        self._check()
        return True

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, r: FakeRedis) -> None:
        self.r, self.ops = r, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: self.ops.append((name, a, k))

    def execute(self) -> list[Any]:
        return [getattr(self.r, n)(*a, **k) for n, a, k in self.ops]


CARD = "2b1f6f4e-8d36-4c3c-9d62-3f1b7b1a0c11"


def test_card_miss_set_hit_and_invalidate() -> None:
    r = FakeRedis()
    c = Cache(r, ttl_s=30)
    body, gen = c.get_card(CARD)
    assert body is None
    assert gen == 0
    c.set_card(CARD, gen, b'{"v":1}')
    assert r.ttl[cache_mod.card_key(CARD, 0)] == 30
    assert c.get_card(CARD) == (b'{"v":1}', 0)
    c.invalidate(CARD)
    assert cache_mod.card_key(CARD, 0) not in r.data  # old entry deleted
    assert c.get_card(CARD) == (None, 1)
    assert r.ttl[cache_mod.card_gen_key(CARD)] == 30 * cache_mod.GEN_TTL_FACTOR


def test_read_racing_a_write_cannot_repopulate_stale_entry() -> None:
    r = FakeRedis()
    c = Cache(r, ttl_s=30)
    _, gen = c.get_card(CARD)  # reader: miss, reads the old row from the DB...
    c.invalidate(CARD)  # ...a writer commits and invalidates...
    c.set_card(CARD, gen, b'{"v":"old"}')  # ...then the reader stores what it read
    assert c.get_card(CARD)[0] is None  # the stale value is never served


def test_list_keys_canonical_and_generation_scoped() -> None:
    a = cache_mod.list_key(3, {"page": 1, "q": "x", "category": None, "page_size": 20})
    b = cache_mod.list_key(3, {"category": None, "page_size": 20, "q": "x", "page": 1})
    assert a == b
    assert a.startswith("pc:v1:list:3:")
    assert cache_mod.list_key(4, {"page": 1}) != cache_mod.list_key(3, {"page": 1})
    assert cache_mod.list_key(3, {"page": 2}) != cache_mod.list_key(3, {"page": 1})


def test_list_cache_and_lsn() -> None:
    r = FakeRedis()
    c = Cache(r, ttl_s=5)
    params = {"page": 1, "page_size": 20, "category": None, "q": None}
    body, gen, lsn = c.get_list(params)
    assert (body, gen, lsn) == (None, 0, None)
    c.set_list(gen, params, b"[]")
    assert c.get_list(params) == (b"[]", 0, None)
    c.invalidate(None, lsn="0/3000060")  # a create: list generation bumps, no card key
    assert c.get_list(params) == (None, 1, "0/3000060")


def test_redis_errors_are_misses_and_open_the_breaker() -> None:
    r = FakeRedis()
    c = Cache(r, ttl_s=30)
    r.fail = True
    assert c.get_card(CARD) == (None, None)
    assert c.get_list({"page": 1}) == (None, None, None)  # breaker open: Redis not even called
    calls = r.calls
    c.set_card(CARD, 0, b"x")
    assert r.calls == calls
    c.invalidate(CARD)  # invalidation still tried (and its failure swallowed)
    assert r.calls == calls + 1
    r.fail = False
    c._down_until = 0.0  # breaker elapsed
    assert c.get_card(CARD) == (None, 0)


def test_disabled_cache() -> None:
    c = Cache(None, ttl_s=30)
    assert not c.enabled
    assert c.get_card(CARD) == (None, None)
    c.invalidate(CARD)
    with pytest.raises(RuntimeError):
        c.ping()


def test_concurrent_health_probes_share_one_run_of_the_checks() -> None:
    """A burst of probes runs the dependency checks once per round: 20 concurrent callers, 1 run;
    a caller after the run finished starts a new one (nothing is cached)."""
    runs = 0

    async def check() -> tuple[dict[str, Any], int]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return {"status": health.HEALTHY}, 200

    async def burst() -> list[tuple[dict[str, Any], int]]:
        flight: health.SingleFlight[tuple[dict[str, Any], int]] = health.SingleFlight()
        answers = await asyncio.gather(*(flight.run(check) for _ in range(20)))
        answers.append(await flight.run(check))
        return answers

    answers = asyncio.run(burst())
    assert runs == 2
    assert all(a == ({"status": health.HEALTHY}, 200) for a in answers)
