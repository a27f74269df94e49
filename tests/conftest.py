"""Test fixtures: a real PostgreSQL database per session, real Redis, settings for child processes.

The database named by TEST_DATABASE_URL is dropped and re-created once per session, then migrated.
Unit tests get a connection whose work is rolled back (`db`); tests that run real processes use
`clean_db`, which empties the tables instead, since other processes must see committed rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.config import Settings, load_settings
from ledger.db import migrate

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ledger_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TEST_CACHE_REDIS_URL = os.environ.get("TEST_CACHE_REDIS_URL", "redis://127.0.0.1:6379/15")

TABLES = (
    "pool_accounts",
    "stake_records",
    "delegate_records",
    "unfreeze_records",
    "listener_checkpoint",
    "ingest_errors",
    "dead_letters",
)


def _recreate_database(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))


@pytest.fixture(scope="session")
def database_url() -> str:
    _recreate_database(TEST_DATABASE_URL)
    migrate(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        {},
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        cache_redis_url=TEST_CACHE_REDIS_URL,
        unfreeze_delay_seconds=30,
        retry_min_backoff_ms=100,
        retry_max_backoff_ms=1000,
        retry_max_retries=3,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CACHE_REDIS_URL": settings.cache_redis_url,
        "TRON_NODE_URL": settings.tron_node_url,
        "UNFREEZE_DELAY_SECONDS": str(settings.unfreeze_delay_seconds),
        "RETRY_MIN_BACKOFF_MS": str(settings.retry_min_backoff_ms),
        "RETRY_MAX_BACKOFF_MS": str(settings.retry_max_backoff_ms),
        "RETRY_MAX_RETRIES": str(settings.retry_max_retries),
        "QUEUE_NAME": settings.queue_name,
        "POLL_INTERVAL": str(settings.poll_interval),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with psycopg.connect(database_url) as conn:
        yield conn
        conn.rollback()


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """Empty tables (committed), for tests whose processes must see each other's writes."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY")
        conn.execute("UPDATE chain_state SET head_block = 0, solid_block = 0")
    yield database_url


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
