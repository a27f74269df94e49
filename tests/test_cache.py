"""The Redis cache: generations, single-flight, staleness races, and Redis going away."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
import redis
from flask.testing import FlaskClient

from harness.servers import PrivateRedis, free_port
from ledger.config import Settings
from ledger.store.cache import (
    LOCAL_PAGES_SWEEP,
    VERSION_KEY,
    Fill,
    PageCache,
    create_cache_client,
    invalidate_accounts,
    read_cache_window,
)
from tests.clocks import ManualClock
from tests.test_api import ALICE, BOB, add_account, get_json, insert_stake, records_url
from web.app import close_app, create_app


@pytest.fixture
def cache_client(settings: Settings, redis_clean: tuple[redis.Redis, redis.Redis]) -> Iterator[redis.Redis]:
    client = create_cache_client(settings.cache_redis_url, 0.5)
    yield client
    client.close()


def fill(body: bytes = b"page", ttl: int = 60) -> Fill:
    return Fill(response=b"db:" + body, stored=b"cache:" + body, ttl=ttl)


# -- generations ------------------------------------------------------------------------------------


def test_invalidate_seeds_missing_generations_with_the_time_then_increments(cache_client: redis.Redis) -> None:
    key_a, key_b = VERSION_KEY.format(address=ALICE), VERSION_KEY.format(address=BOB)
    before_ms = int(time.time() * 1000)
    invalidate_accounts(cache_client, [ALICE, BOB, ALICE])
    first = int(cache_client.get(key_a))  # type: ignore[arg-type]
    assert first >= before_ms and int(cache_client.get(key_b)) >= before_ms  # type: ignore[arg-type]
    invalidate_accounts(cache_client, [ALICE])
    assert int(cache_client.get(key_a)) == first + 1  # type: ignore[arg-type]
    invalidate_accounts(cache_client, [])  # nothing to do, no error

    # A lost generation comes back above every number it held, so old pages stay unreachable.
    cache_client.delete(key_a)
    time.sleep(0.005)
    invalidate_accounts(cache_client, [ALICE])
    assert int(cache_client.get(key_a)) > first + 1  # type: ignore[arg-type]


def test_read_fill_hit_and_invalidate(cache_client: redis.Redis) -> None:
    pages = PageCache(cache_client)
    assert pages.fetch(ALICE, "p1", fill) == (b"db:page", False)
    assert pages.fetch(ALICE, "p1", fill) == (b"cache:page", True)
    assert pages.fetch(BOB, "p1", fill) == (b"db:page", False)  # accounts do not share pages
    invalidate_accounts(cache_client, [ALICE])
    assert pages.fetch(ALICE, "p1", lambda: fill(b"new")) == (b"db:new", False)
    assert pages.fetch(ALICE, "p1", fill) == (b"cache:new", True)
    assert pages.fetch(BOB, "p1", fill) == (b"cache:page", True)
    c = pages.counters
    assert (c.hits, c.misses, c.fills, c.errors) == (3, 3, 3, 0)
    assert pages.stats() == {"hits": 3, "misses": 3, "local_hits": 0}
    assert cache_client.keys("ledger:lock:*") == []  # every fill released its lock
    pages.close()


def test_a_page_filled_across_an_invalidation_is_never_served(cache_client: redis.Redis) -> None:
    """The generation is read before the query, so rows read before a worker's commit are stored
    under the old generation and the next reader misses."""
    pages = PageCache(cache_client)

    def load_while_a_worker_commits() -> Fill:
        body = fill(b"old")  # the query ran
        invalidate_accounts(cache_client, [ALICE])  # then a worker committed and bumped
        return body

    assert pages.fetch(ALICE, "p1", load_while_a_worker_commits) == (b"db:old", False)
    assert pages.fetch(ALICE, "p1", lambda: fill(b"new")) == (b"db:new", False)
    assert pages.fetch(ALICE, "p1", fill) == (b"cache:new", True)
    pages.close()


def test_fill_that_is_not_to_be_stored_and_failing_loader_release_the_lock(cache_client: redis.Redis) -> None:
    pages = PageCache(cache_client)
    assert pages.fetch(ALICE, "x", lambda: Fill(b"r", None, 10)) == (b"r", False)
    assert cache_client.keys("ledger:lock:*") == []

    def broken() -> Fill:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        pages.fetch(ALICE, "y", broken)
    assert cache_client.keys("ledger:lock:*") == []
    assert pages.fetch(ALICE, "y", fill) == (b"db:page", False)
    pages.close()


def test_scripts_are_reloaded_after_a_script_flush(cache_client: redis.Redis) -> None:
    pages = PageCache(cache_client)
    pages.fetch(ALICE, "p1", fill)
    cache_client.script_flush()
    assert pages.fetch(ALICE, "p1", fill) == (b"cache:page", True)
    pages.close()


# -- single-flight ----------------------------------------------------------------------------------


def test_concurrent_misses_query_once(cache_client: redis.Redis) -> None:
    pages = PageCache(cache_client)
    calls = []
    start = threading.Barrier(16)
    results: list[tuple[bytes, bool]] = []

    def slow_load() -> Fill:
        calls.append(1)
        time.sleep(0.1)
        return fill()

    def reader() -> None:
        start.wait()
        results.append(pages.fetch(ALICE, "hot", slow_load))

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(results) == [(b"cache:page", True)] * 15 + [(b"db:page", False)]
    assert pages.counters.coalesced == 15 and pages.counters.fills == 1
    pages.close()


def test_waiters_fall_back_to_the_database_after_a_bounded_wait(cache_client: redis.Redis) -> None:
    clock = ManualClock()
    pages = PageCache(cache_client, wait_seconds=0.05, poll_seconds=0.005, clock=clock, sleep=clock.advance)
    holder_started, release = threading.Event(), threading.Event()

    def stuck_load() -> Fill:
        holder_started.set()
        release.wait(5)
        return fill(b"late")

    holder = threading.Thread(target=pages.fetch, args=(ALICE, "slow", stuck_load))
    holder.start()
    try:
        assert holder_started.wait(5)
        began = clock()
        assert pages.fetch(ALICE, "slow", lambda: fill(b"own")) == (b"db:own", False)
        assert 0.05 - 1e-9 <= clock() - began <= 0.05 + 0.005 + 1e-9  # polled until its patience ran out
        assert pages.counters.fallbacks == 1
    finally:
        release.set()
        holder.join()
    pages.close()


def test_api_single_flight_on_one_hot_page(
    settings: Settings, clean_db: str, redis_clean: tuple[redis.Redis, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    import web.records

    with psycopg.connect(clean_db, autocommit=True) as conn:
        account = add_account(conn, ALICE)
        insert_stake(conn, ALICE, 1)
    queries = []
    real = web.records.fetch_records  # type: ignore[attr-defined]  # the name the view calls

    def counted(*args: object, **kwargs: object) -> object:
        queries.append(1)
        time.sleep(0.1)  # a slow query, so every request arrives while it runs
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(web.records, "fetch_records", counted)
    app = create_app(settings)
    app.extensions["ledger"].accounts.resolve(str(account))  # account lookups are not what is measured
    start = threading.Barrier(12)
    sources: list[str] = []

    def request() -> None:
        client = app.test_client()
        start.wait()
        sources.append(get_json(client, records_url("stake", account))["meta"]["source"])

    threads = [threading.Thread(target=request) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = get_json(app.test_client(), "/api/cache/stats")["data"]
    close_app(app)
    assert len(queries) == 1
    assert sorted(sources) == ["cache"] * 11 + ["database"]
    assert stats["process"]["fills"] == 1 and stats["process"]["coalesced"] == 11


# -- Redis down ---------------------------------------------------------------------------------------


def test_api_answers_from_postgres_while_redis_is_down(
    settings: Settings, clean_db: str, private_redis: PrivateRedis
) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        account = add_account(conn, ALICE)
        row_id = insert_stake(conn, ALICE, 1, amount=2**60)
    clock = ManualClock()
    app = create_app(replace(settings, cache_redis_url=private_redis.url()), clock=clock, sleep=clock.advance)
    client: FlaskClient = app.test_client()
    url = records_url("stake", account)
    try:
        assert get_json(client, url)["meta"]["source"] == "database"
        assert get_json(client, url)["meta"]["source"] == "cache"

        private_redis.stop(signal.SIGKILL)
        began = time.monotonic()
        for _ in range(20):
            body = get_json(client, url)
            assert body["meta"]["source"] == "database"
            assert body["data"][0]["id"] == row_id and body["data"][0]["amount"] == 2**60
        assert get_json(client, f"/api/accounts/{account}/summary")["meta"]["source"] == "database"
        # A refused connection opens the breaker at once: no request waits a timeout.
        assert time.monotonic() - began < 2.0
        stats = get_json(client, "/api/cache/stats")["data"]
        assert stats["errors"] >= 1 and stats["process"]["bypassed"] >= 19
        # Pages are served: the process is degraded, not unready
        ready = get_json(client, "/health/ready", 200)
        assert ready["status"] == "degraded" and ready["checks"]["redis"]["ok"] is False

        # Redis comes back (empty): within the breaker's pause it is not asked, after it it is again.
        private_redis.start()
        clock.advance(app.extensions["ledger"].pages.breaker_seconds - 0.01)
        assert get_json(client, url)["meta"]["source"] == "database"
        assert get_json(client, "/api/cache/stats")["data"]["process"]["bypassed"] > stats["process"]["bypassed"]
        clock.advance(0.01)
        assert get_json(client, url)["meta"]["source"] == "database"
        assert get_json(client, url)["meta"]["source"] == "cache"
    finally:
        close_app(app)


def _stalls(server: PrivateRedis, stall: float, every: float, done: threading.Event) -> None:
    """Redis descheduled for `stall` seconds in every `every`, as on a host whose CPUs are all busy."""
    while not done.is_set():
        server.signal(signal.SIGSTOP)
        time.sleep(stall)
        server.signal(signal.SIGCONT)
        done.wait(every - stall)


@pytest.mark.slow
def test_slow_answers_on_a_busy_host_do_not_open_the_breaker(private_redis: PrivateRedis) -> None:
    # Given the production socket timeout, and Redis stalled past it for 80 ms in every 300 ms
    client = create_cache_client(private_redis.url(), 0.05)
    pages = PageCache(client)
    pages.fetch(ALICE, "p1", lambda: fill())
    done = threading.Event()
    stalls = threading.Thread(target=_stalls, args=(private_redis, 0.08, 0.3, done))
    sources: list[bool] = []

    def reader() -> None:  # a granian blocking thread, reading as fast as it can
        while not done.is_set():
            sources.append(pages.fetch(ALICE, "p1", lambda: fill())[1])

    # When four threads read for 3 s
    readers = [threading.Thread(target=reader) for _ in range(4)]
    try:
        stalls.start()
        for t in readers:
            t.start()
        time.sleep(3)
    finally:
        done.set()
        stalls.join()
        for t in readers:
            t.join()
        private_redis.signal(signal.SIGCONT)
        pages.close()
    # Then reads timed out in the stalls, but Redis was never skipped: the rest came from the cache
    assert pages.counters.errors >= 5
    assert pages.counters.bypassed == 0
    assert sources.count(True) == len(sources) - pages.counters.errors


def test_a_hung_cache_opens_the_breaker_and_keeps_it_open(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    filler = PageCache(create_cache_client(private_redis.url(), 5.0))  # patient: the page must be stored
    filler.fetch(ALICE, "p1", lambda: fill())
    filler.close()
    pages = PageCache(create_cache_client(private_redis.url(), 0.05), clock=clock)
    private_redis.signal(signal.SIGSTOP)
    try:
        # Reads time out, but timeouts for less than `hung_seconds` leave the breaker closed
        for _ in range(5):
            assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
        clock.advance(pages.hung_seconds - 0.01)
        assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
        assert pages.counters.errors == 6 and pages.counters.bypassed == 0
        # Nothing but timeouts for `hung_seconds`: the next one opens it
        clock.advance(0.01)
        assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
        assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
        assert pages.counters.errors == 7 and pages.counters.bypassed == 1
        # Past its pause, one read tries Redis, times out, and the breaker opens again at once
        clock.advance(pages.breaker_seconds)
        pages.fetch(ALICE, "p1", lambda: fill())
        pages.fetch(ALICE, "p1", lambda: fill())
        assert pages.counters.errors == 8 and pages.counters.bypassed == 2
    finally:
        private_redis.signal(signal.SIGCONT)
    # Redis answering again: skipped until the pause is over, then used again
    clock.advance(pages.breaker_seconds - 0.01)
    assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
    clock.advance(0.01)
    assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"cache:page", True)
    pages.close()


def test_a_refused_connection_opens_the_breaker_at_once(private_redis: PrivateRedis) -> None:
    pages = PageCache(create_cache_client(private_redis.url(), 0.05))
    pages.fetch(ALICE, "p1", lambda: fill())
    private_redis.stop(signal.SIGKILL)
    pages.fetch(ALICE, "p1", lambda: fill())
    assert pages.counters.errors == 1
    for _ in range(10):
        assert pages.fetch(ALICE, "p1", lambda: fill()) == (b"db:page", False)
    assert pages.counters.errors == 1 and pages.counters.bypassed == 10
    pages.close()


def test_api_answers_when_redis_never_was_there(settings: Settings, clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        account = add_account(conn, ALICE)
        insert_stake(conn, ALICE, 1)
    app = create_app(replace(settings, cache_redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        client = app.test_client()
        for _ in range(3):
            assert get_json(client, records_url("stake", account))["meta"]["source"] == "database"
        assert get_json(client, "/api/cache/stats")["data"]["hits"] is None
    finally:
        close_app(app)


def test_micro_cache_serves_a_hot_page_without_redis_for_its_ttl_only(cache_client: redis.Redis) -> None:
    # Given a page read once from Redis by a process with a 0.3 s micro-cache
    clock = ManualClock()
    pages = PageCache(cache_client, local_ttl=0.3, clock=clock)
    pages.fetch(ALICE, "p1", lambda: fill(b"v1"))
    assert pages.fetch(ALICE, "p1", lambda: fill(b"never")) == (b"cache:v1", True)
    # When the account is invalidated
    invalidate_accounts(cache_client, [ALICE])
    # Then this process may serve the old page for the micro-cache's TTL, and no longer
    assert pages.fetch(ALICE, "p1", lambda: fill(b"v2")) == (b"cache:v1", True)
    clock.advance(0.29)
    assert pages.fetch(ALICE, "p1", lambda: fill(b"v2")) == (b"cache:v1", True)
    assert pages.counters.local_hits == 2
    clock.advance(0.01)
    assert pages.fetch(ALICE, "p1", lambda: fill(b"v2")) == (b"db:v2", False)
    pages.close()


def test_local_hits_reach_the_shared_counts_and_the_window(cache_client: redis.Redis) -> None:
    # Given a process whose micro-cache serves a hot page several times without Redis
    pages = PageCache(cache_client, local_ttl=30)
    before = read_cache_window(cache_client, 2)
    pages.fetch(ALICE, "p1", lambda: fill(b"v1"))  # miss, filled
    for _ in range(5):
        assert pages.fetch(ALICE, "p1", lambda: fill(b"never"))[1]  # 1 Redis hit, then 4 local hits
    assert pages.counters.local_hits == 4
    # When the process next talks to Redis (another page: its local hits ride along)
    pages.fetch(BOB, "p1", lambda: fill(b"b1"))
    # Then the shared counts and the per-minute window include them, and the hit rate with them
    after = read_cache_window(cache_client, 2)
    assert after["local_hits"] - before["local_hits"] == 4
    assert after["hits"] - before["hits"] == 1 and after["misses"] - before["misses"] == 2
    assert pages.stats()["local_hits"] == 4
    pages.close()


def test_micro_cache_drops_expired_pages_instead_of_growing_to_its_cap(cache_client: redis.Redis) -> None:
    # Given a process with a short micro-cache that has read many distinct pages, long enough ago
    clock = ManualClock()
    pages = PageCache(cache_client, local_ttl=0.05, clock=clock)
    for n in range(LOCAL_PAGES_SWEEP):
        pages.fetch(ALICE, f"p{n}", lambda: fill(b"v"))
        pages.fetch(ALICE, f"p{n}", lambda: fill(b"never"))  # a Redis hit: now held in-process
    assert len(pages._local_pages) == LOCAL_PAGES_SWEEP
    clock.advance(0.05)
    # When one more page is read from Redis
    pages.fetch(ALICE, "fresh", lambda: fill(b"v"))
    pages.fetch(ALICE, "fresh", lambda: fill(b"never"))
    # Then the expired pages are gone and only the live one is held
    assert list(pages._local_pages) == [(ALICE, "fresh")]
    pages.close()
