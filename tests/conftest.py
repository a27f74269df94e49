"""Test fixtures: a real PostgreSQL database per session, real Redis, settings for child processes.

The database named by TEST_DATABASE_URL is dropped and re-created once per session, then migrated.
Unit tests get a connection whose work is rolled back (`db`); tests that run real processes use
`clean_db`, which empties the tables instead, since other processes must see committed rows.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from harness.procs import Proc
from harness.servers import PrivateRedis
from harness.stack import SIM_ACCOUNTS, delete_rabbitmq_queues, settings_env
from ledger.config import Settings, load_settings
from ledger.store.db import migrate, recreate_database

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ledger_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TEST_CACHE_REDIS_URL = os.environ.get("TEST_CACHE_REDIS_URL", "redis://127.0.0.1:6379/15")
# The pipeline and fault tests that take `broker_env` run on this RabbitMQ too (queues named per
# test and deleted afterwards, so a shared RabbitMQ is left as it was found).
TEST_RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

# Property tests draw new examples on every run on a developer's machine (more bugs found over
# time) and the same examples in CI (CI=true), so a CI failure is reproducible and never a fluke.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# Every other table of the schema is emptied between tests that run real processes. Listed from the
# catalog, since a hand-kept list misses the tables new migrations add, and their rows then reach
# the next test (a scheduler's network totals as another test's summary units).
KEPT_TABLES = (
    "schema_migrations",  # what the session's migrate applied
    "chain_state",  # one row from migration 001 on: reset, not emptied
)


@pytest.fixture(scope="session", autouse=True)
def no_keys_left_behind() -> Iterator[None]:
    """The test Redis DBs are flushed at the start of the tests that use them and once more at the
    end of the session, so a test run leaves no keys behind."""
    yield
    for url in (TEST_REDIS_URL, TEST_CACHE_REDIS_URL):
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        except redis.RedisError:
            pass  # a test that stopped Redis on purpose; nothing is left in a server that is gone
        finally:
            client.close()


@pytest.fixture(scope="session")
def database_url() -> str:
    recreate_database(TEST_DATABASE_URL)
    migrate(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


def settings_for(database_url: str, **overrides: object) -> Settings:
    """Settings on the test database and the test Redis DBs, with no micro-cache and no shared
    monitor snapshot: tests read their writes at once (both have their own tests)."""
    return load_settings(
        {},
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        cache_redis_url=TEST_CACHE_REDIS_URL,
        cache_local_ttl=0.0,
        monitor_cache_seconds=0.0,
        **overrides,
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(
        database_url,
        unfreeze_delay_seconds=30,
        retry_min_backoff_ms=100,
        retry_max_backoff_ms=1000,
        retry_max_retries=3,
        # The simulator has no quota: the request budget has its own tests (test_budget.py).
        tron_requests_per_second=0.0,
        tron_requests_per_day=0,
        # Webhook receivers in the tests listen on 127.0.0.1; retries come quickly.
        webhook_allow_private=True,
        webhook_timeout_seconds=2.0,
        webhook_min_backoff_ms=100,
        webhook_max_backoff_ms=1000,
        webhook_retry_hours=0.01,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with psycopg.connect(database_url) as conn:
        # Open the transaction now, so a `conn.transaction()` in the code under test is a
        # savepoint inside it, not a transaction of its own that would commit.
        conn.execute("SELECT 1")
        yield conn
        conn.rollback()


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """Empty tables (committed), for tests whose processes must see each other's writes. Emptied
    again afterwards: unit tests on `db` (e.g. test_persist) expect no committed rows."""
    _empty_tables(database_url)
    yield database_url
    _empty_tables(database_url)


def _empty_tables(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> ALL(%s)",
                (list(KEPT_TABLES),),
            )
        ]
        truncate = sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(map(sql.Identifier, sorted(tables)))
        )
        # A process of the test that is still stopping may hold a row lock the TRUNCATE queues
        # behind, while its next statement queues behind the TRUNCATE: PostgreSQL ends one of the
        # two as a deadlock. The process is on its way out, so trying again goes through.
        for attempt in range(5):
            try:
                conn.execute(truncate)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                time.sleep(0.2)
        conn.execute("UPDATE chain_state SET head_block = 0, solid_block = 0")


@pytest.fixture
def redis_clean(settings: Settings) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """Empty broker and cache databases (the test Redis DB numbers only)."""
    broker = redis.Redis.from_url(settings.redis_url)
    cache = redis.Redis.from_url(settings.cache_redis_url)
    broker.flushdb()
    cache.flushdb()
    yield broker, cache
    broker.close()
    cache.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, which it may kill or hang (SIGSTOP): the shared one is never touched."""
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def env(settings: Settings, clean_db: str, redis_clean: object) -> dict[str, str]:
    return {
        **settings_env(settings),
        "QUEUE_NAME": f"e2e-{uuid.uuid4().hex[:8]}",
        "POLL_INTERVAL": "0.1",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
    }


@pytest.fixture
def broker_env(request: pytest.FixtureRequest, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` on the broker named by the test's parameter: "redis" (the default) or "rabbitmq".

    Use with `@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)`.
    """
    kind = getattr(request, "param", "redis")
    if kind == "redis":
        yield {**env, "BROKER_URL": ""}
        return
    assert kind == "rabbitmq", kind
    yield {**env, "BROKER_URL": TEST_RABBITMQ_URL}
    delete_rabbitmq_queues(TEST_RABBITMQ_URL, env["QUEUE_NAME"])


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The test's processes, killed (SIGKILL to each one's process group) when it ends: its facts
    are taken by then, and a graceful stop costs seconds a process (a dramatiq worker's threads
    and consumers wind down on their timeouts). Graceful stops have tests of their own
    (tests/test_run.py, tests/test_supervise.py)."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()
    for proc in started:
        proc.popen.wait(10)
