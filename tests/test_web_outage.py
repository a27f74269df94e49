"""The web while a dependency is away: a dead cache leaves it ready (degraded, every page from
PostgreSQL); with PostgreSQL away every route answers within 0.5 s, a 503 that says why (or the
figures that do not need it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit

import psycopg
import pytest
from flask import Flask

from harness.stack import wait_until
from harness.tcpproxy import TcpProxy
from ledger.config import Settings
from tests.test_api import ALICE, add_account, insert_stake
from web.app import close_app, create_app

# Every route that reads PostgreSQL, with the statuses it may answer while PostgreSQL is away (a
# page the cache holds is still served).
ROUTES = {
    "/health/ready": (503,),
    "/health/live": (200,),
    "/api/ingest": (503,),
    "/api/stake/records?pool_account_id=1": (200, 503),
    "/api/stake/records?pool_account_id=2": (404, 503),  # unknown: remembered for a second
    f"/api/delegate/records?pool_account_id={ALICE}": (200, 503),
    "/api/accounts/1/summary": (200, 503),
    "/api/summary?external_id=42": (404, 503),  # none has it: remembered for a second
    "/api/dead-letters": (503,),
    "/api/drift": (503,),
    "/api/reconciliation/runs": (503,),
    "/api/monitor": (200,),
    "/health/tron-data-health": (500,),
    "/metrics": (200,),
    "/api/cache/stats": (200,),
}


def proxied(url: str) -> tuple[TcpProxy, str]:
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.open()
    return proxy, url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")


@pytest.fixture
def pg_proxy(settings: Settings, clean_db: str, redis_clean: object) -> Iterator[tuple[TcpProxy, Settings]]:
    proxy, url = proxied(settings.database_url)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        add_account(conn, ALICE)
        insert_stake(conn, ALICE, 100)
    yield proxy, replace(settings, database_url=url)
    proxy.close()


@pytest.fixture
def app(pg_proxy: tuple[TcpProxy, Settings]) -> Iterator[Flask]:
    application = create_app(pg_proxy[1])
    yield application
    close_app(application)


def test_every_answer_within_half_a_second_while_postgresql_is_away(
    pg_proxy: tuple[TcpProxy, Settings], app: Flask
) -> None:
    client = app.test_client()
    for url in ROUTES:  # warm: the pool's connections exist, the account is known
        client.get(url)
    pg_proxy[0].close()
    slow = {}
    for _ in range(3):
        for url, statuses in ROUTES.items():
            start = time.perf_counter()
            response = client.get(url)
            took = time.perf_counter() - start
            assert response.status_code in statuses, (url, response.status_code, response.data[:300])
            body = response.get_json() if response.mimetype == "application/json" else {}
            if response.status_code == 503 and url != "/health/ready":
                assert body["success"] is False and "database" in body["error"]["message"], body
                assert response.headers["Retry-After"]
            if url == "/health/ready":
                assert body["status"] == "unavailable" and body["checks"]["postgres"]["ok"] is False
            if took > 0.5:
                slow[url] = round(took, 3)
    assert slow == {}, slow


def test_a_dead_cache_is_degraded_not_unready(settings: Settings, clean_db: str, redis_clean: object) -> None:
    cache = urlsplit(settings.cache_redis_url)
    proxy = TcpProxy(cache.hostname or "127.0.0.1", cache.port or 6379)
    proxy.open()
    with psycopg.connect(clean_db, autocommit=True) as conn:
        add_account(conn, ALICE)
        insert_stake(conn, ALICE, 100)
    application = create_app(
        replace(settings, cache_redis_url=settings.cache_redis_url.replace(f":{cache.port}", f":{proxy.port}"))
    )
    try:
        client = application.test_client()
        # Ready with both up. Waited for, not asked once: the first ping opens a connection through
        # the proxy's threads within the cache's 50-ms timeout, and the first PostgreSQL check
        # waits 0.3 s for the pool's first connection, neither sure on a busy host.
        wait_until(lambda: client.get("/health/ready").get_json()["status"] == "ready", 10, "ready")
        proxy.close()
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.data
        body = ready.get_json()
        assert body["status"] == "degraded" and body["checks"]["redis"]["ok"] is False
        assert body["checks"]["postgres"]["ok"] is True
        page = client.get("/api/stake/records?pool_account_id=1")
        assert page.status_code == 200 and page.get_json()["meta"]["source"] == "database"
    finally:
        close_app(application)
        proxy.close()
