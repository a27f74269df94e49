"""Which path answers a records request: native (PostgreSQL + cache), legacy, or fallback.

- **legacy** (`meta.source: "legacy"`): the gray release (ledger/store/rollout.py) keeps this account
  on the old way, web/legacy.py. If TronGrid cannot answer, the native path answers instead: the
  database is healthy, and a client should not pay for the old path's outage.
- **fallback** (`meta.source: "fallback"`): PostgreSQL failed (no connection within
  WEB_DB_TIMEOUT, or a connection error) and the cache had no page, so the legacy path answers.
  Rate-limited by a budget of its own, FALLBACK_REQUESTS_PER_MINUTE answers for all web processes
  together, kept on the broker Redis (REDIS_URL; FALLBACK_REDIS_URL), not on the cache Redis, which
  is down in the very case it exists for. With that Redis down too, each process limits itself
  at the same rate (ledger/coordination/budget.py's local bucket). Spent: 503 `fallback_budget_spent` with
  Retry-After. Fallback answers are never cached: they would outlive the outage.
- **native**: everything else; a sample (`shadow_percent`) is compared with the legacy answer off
  the request path (web/shadow.py).

Each web process re-reads the rollout row every ROLLOUT_REFRESH_SECONDS on a thread of its own
and keeps the last value it read while PostgreSQL is unreachable. Requests only read a reference.

Every records and summary answer is counted (`ledger_api_reads_total{route,source}`) and every
TronGrid request this process makes too (`ledger_node_requests_total`), flushed to the broker
Redis with the other processes' counters (ledger/ops/metrics.py): /metrics and the status page divide
the two (TronGrid requests per 1,000 API reads, web/dependency.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
from flask import Flask, Response, current_app
from psycopg_pool import ConnectionPool, PoolTimeout

from ledger.chain.node import (
    FALLBACK,
    LEGACY,
    SHADOW,
    BudgetUnavailable,
    NodeUnavailable,
    TronNode,
    node_from_settings,
)
from ledger.chain.values import NodeError
from ledger.config import Settings
from ledger.coordination.budget import BudgetExhausted, BudgetLimits, Priority, RequestBudget, create_budget
from ledger.ops.metrics import Counters, Flusher, metrics_client, sample
from ledger.store.accounts import AccountKeyError
from ledger.store.rollout import Rollout, goes_legacy, read_rollout
from web.directory import PUBLISH_SECONDS, NotPublished, publish_directory, published_address
from web.legacy import LegacyPage, legacy_page
from web.pg import read_connection
from web.resources import resources
from web.responses import dumps, error_response, shown
from web.shadow import ShadowComparer

log = logging.getLogger(__name__)

# What "PostgreSQL failed" looks like to a view (the same pair web.errors turns into a 503).
DATABASE_DOWN = (PoolTimeout, psycopg.OperationalError)

API_READS = "ledger_api_reads_total"  # {route=records|summary, source}
LEGACY_ERRORS = "ledger_legacy_errors_total"  # {path=legacy|fallback}: TronGrid could not answer
# Seconds the legacy path may wait for the shared TronGrid budget while a client waits.
BUDGET_WAIT_SECONDS = 2.0
RECORDS, SUMMARY = "records", "summary"
NATIVE = "native"
# The sample names of every (route, source) pair, made once rather than on every read.
READ_SAMPLES = {
    (route, source): sample(API_READS, {"route": route, "source": source})
    for route in (RECORDS, SUMMARY)
    for source in (NATIVE, "legacy", "fallback")
}


@dataclass
class Paths:
    """Per web process: the rollout it last read, the TronGrid client, the fallback limiter."""

    settings: Settings
    node: TronNode | None  # None without TRON_NODE_URL: no legacy path, no fallback
    fallback_budget: RequestBudget | None  # None: FALLBACK_REQUESTS_PER_MINUTE=0
    counters: Counters
    shadow: ShadowComparer | None
    rollout: Rollout = field(default_factory=Rollout)
    fallback_node: TronNode | None = None  # the fallback's client (the same node, counted apart)
    rollout_read: bool = False  # the last attempt to read the row succeeded
    _warned: bool = False  # the current outage of the rollout row is logged
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _flusher: Flusher | None = None


def create_paths(settings: Settings, pool: ConnectionPool) -> Paths:
    counters = Counters()
    node = fallback_node = shadow_node = None
    if settings.tron_node_url:
        # One retry at most and a short timeout: a client is waiting (the listener retries more).
        # Background in the shared budget: legacy pages, the fallback and shadow comparisons must
        # never make the listener, which keeps every page fresh, wait for the node. A client per
        # path, so each one's requests are counted under its name (the requests reads cause).
        def client(caller: str) -> TronNode:
            return node_from_settings(
                settings,
                counters=counters,
                priority=Priority.BACKGROUND,
                retries=1,
                timeout=settings.legacy_timeout_seconds,
                budget_wait=BUDGET_WAIT_SECONDS,
                caller=caller,
            )

        node, fallback_node, shadow_node = client(LEGACY), client(FALLBACK), client(SHADOW)
    fallback_budget = None
    per_minute = settings.fallback_requests_per_minute
    if node is not None and per_minute > 0:
        # Burst: a tenth of a minute's worth, so an outage's first second cannot take the minute.
        limits = BudgetLimits(per_second=per_minute / 60, burst=max(1.0, float(int(per_minute / 10))), per_day=0)
        fallback_budget = create_budget(settings.fallback_limiter_url, limits, name="fallback", max_wait=0)
    shadow = ShadowComparer(shadow_node, pool, counters, settings) if shadow_node is not None else None
    # Until the row is read, the start share: a process that cannot read it at start serves the
    # share the install starts with, not a made-up one.
    paths = Paths(
        settings, node, fallback_budget, counters, shadow, Rollout(settings.rollout_start_new_percent), fallback_node
    )
    refresher = threading.Thread(target=_refresh_loop, args=(paths, pool), name="rollout-refresh", daemon=True)
    paths._threads.append(refresher)
    refresher.start()
    if shadow is not None:
        shadow.start()
    paths._flusher = Flusher(counters, metrics_client(settings.redis_url)).start()
    return paths


def close_paths(paths: Paths) -> None:
    paths._stop.set()
    for thread in paths._threads:
        thread.join(timeout=5)
    if paths.shadow is not None:
        paths.shadow.stop()
    if paths._flusher is not None:
        paths._flusher.stop()
    for node in (paths.node, paths.fallback_node, paths.shadow.node if paths.shadow else None):
        if node is not None:
            node.close()
    if paths.fallback_budget is not None:
        paths.fallback_budget.close()


def install(app: Flask, paths: Paths) -> None:
    app.extensions["paths"] = paths


def current_paths() -> Paths:
    return current_app.extensions["paths"]  # type: ignore[no-any-return]


def refresh_rollout(paths: Paths, pool: ConnectionPool) -> None:
    """Read the rollout row now; on failure keep the last value (logged once per outage)."""
    try:
        with read_connection(pool, timeout=1.0) as conn:
            rollout = read_rollout(conn, paths.settings.rollout_start_new_percent)
    except Exception as exc:  # noqa: BLE001 - any failure: keep serving with the last known value
        if not paths._warned:
            log.warning("rollout: cannot read the setting (%s); keeping %s", type(exc).__name__, paths.rollout)
        paths.rollout_read = False
        paths._warned = True
        return
    if rollout != paths.rollout:
        log.info("rollout: now %s (was %s)", rollout, paths.rollout)
    paths.rollout = rollout
    paths.rollout_read = True
    paths._warned = False


def _refresh_loop(paths: Paths, pool: ConnectionPool) -> None:
    """The rollout every ROLLOUT_REFRESH_SECONDS and, when there is a fallback, the published
    account directory every PUBLISH_SECONDS (web/directory.py)."""
    published: int | None = None
    publish_due = 0.0
    client = redis.Redis.from_url(paths.settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        while True:
            refresh_rollout(paths, pool)
            if paths.fallback_budget is not None and time.monotonic() >= publish_due:
                try:
                    published = publish_directory(pool, client, published)
                    publish_due = time.monotonic() + PUBLISH_SECONDS
                except Exception as exc:  # noqa: BLE001 - tried again at the next refresh
                    log.debug("account directory not published: %s", type(exc).__name__)
            if paths._stop.wait(paths.settings.rollout_refresh_seconds):
                return
    finally:
        client.close()


# -- the three answers ------------------------------------------------------------------------------


Render = Callable[[dict[str, Any]], dict[str, Any]]


def answers_legacy(paths: Paths, address: str) -> bool:
    """True when the rollout sends this account's reads the old way (TronGrid) now."""
    return paths.node is not None and goes_legacy(address, paths.rollout.new_percent)


def legacy_response(kind: str, address: str, page: int, limit: int, render: Render | None = None) -> Response | None:
    """The legacy answer when the rollout sends this account the old way, else None. `render`
    turns the native-shaped page into another response shape (it sees `meta.source`)."""
    paths = current_paths()
    if not answers_legacy(paths, address):
        return None
    try:
        result = _legacy_page(paths, paths.node, kind, address, page, limit)
    except (NodeUnavailable, NodeError) as exc:  # NodeError: the node answered {"Error": ...}
        paths.counters.inc(LEGACY_ERRORS, {"path": "legacy"})
        log.warning("legacy path failed for %s (%s); answering natively", address, exc)
        return None
    return _answer(result.rows, page, limit, "legacy", render)


def _legacy_page(paths: Paths, node: TronNode | None, kind: str, address: str, page: int, limit: int) -> LegacyPage:
    assert node is not None  # both callers checked
    return legacy_page(
        node,
        kind,
        address,
        page=page,
        limit=limit,
        unfreeze_delay_seconds=paths.settings.unfreeze_delay_seconds,
        max_pages=paths.settings.legacy_max_pages,
    )


def fallback_response(
    kind: str, key: str | None, address: str | None, page: int, limit: int, render: Render | None = None
) -> Response:
    """The answer when PostgreSQL failed and the cache had no page: TronGrid, within its budget,
    for pool accounts only.

    `address` is the account when it was resolved before PostgreSQL failed; otherwise `key` (an
    id or an address) is looked up in the published directory (web/directory.py): a key that names
    no pool account is a 404, as with the database; one that cannot be told is a 503."""
    paths = current_paths()
    if paths.fallback_node is None or paths.fallback_budget is None:
        return _database_unavailable()
    if address is None:
        if key is None:
            return _database_unavailable()
        try:
            address = published_address(resources().broker_redis, key)
        except (AccountKeyError, NotPublished):
            return _database_unavailable()
        if address is None:
            return error_response(404, "not_found", f"no pool account {shown(key.strip())} is tracked by this ledger")
    try:
        # Its own bucket ("fallback") with one class of caller: no reserve to leave.
        paths.fallback_budget.acquire(Priority.LIVE)
    except BudgetExhausted as exc:
        return _unavailable(
            "fallback_budget_spent",
            "the database is unavailable and the TronGrid fallback's budget is spent; try again later",
            exc.retry_after,
        )
    try:
        result = _legacy_page(paths, paths.fallback_node, kind, address, page, limit)
    except BudgetUnavailable as exc:
        return _unavailable(
            "fallback_budget_spent",
            "the database is unavailable and the TronGrid request budget is spent; try again later",
            exc.retry_after or 1.0,
        )
    except (NodeUnavailable, NodeError) as exc:
        paths.counters.inc(LEGACY_ERRORS, {"path": "fallback"})
        log.warning("fallback failed for %s: %s", address, exc)
        reason = "answered with an error" if isinstance(exc, NodeError) else "did not answer"
        return _unavailable("unavailable", f"the database is unavailable and TronGrid {reason}", 1.0)
    return _answer(result.rows, page, limit, "fallback", render)


def shadow_sample(kind: str, address: str, page: int, limit: int, cursor: bool) -> None:
    """After a native answer: maybe compare it with the legacy answer, off the request path."""
    paths = current_paths()
    if paths.shadow is not None and page == 1 and not cursor:
        paths.shadow.maybe_offer(paths.rollout.shadow_percent, kind, address, limit)


def _answer(rows: list[dict[str, Any]], page: int, limit: int, source: str, render: Render | None) -> Response:
    current_paths().counters.inc(READ_SAMPLES[RECORDS, source])
    meta = {"page": page, "limit": limit, "source": source, "next_cursor": None}
    payload: dict[str, Any] = {"success": True, "data": rows, "meta": meta}
    body = dumps(render(payload) if render is not None else payload)
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})


def _unavailable(code: str, message: str, retry_after: float) -> Response:
    response = error_response(503, code, message)
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _database_unavailable() -> Response:
    # As web.errors answers a database failure when no fallback can be made.
    return _unavailable("unavailable", "the database is unavailable; try again shortly", 1.0)


def count_read(paths: Paths, route: str) -> None:
    """Count one native answer of `route` (RECORDS or SUMMARY); legacy and fallback answers count
    themselves. Counted where the answer is made: an after-request hook would cost every request."""
    paths.counters.inc(READ_SAMPLES[route, NATIVE])
