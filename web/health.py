"""Liveness, readiness and cache statistics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flask import Blueprint, Response

from web.pg import read_connection
from web.resources import resources
from web.responses import json_response

bp = Blueprint("health", __name__)

_READY_DB_TIMEOUT = 1.0  # seconds to get a pooled connection; the Redis socket timeout is Settings'


@bp.get("/health/live")
def live() -> Response:
    # No dependency checks: a restart would not fix PostgreSQL or Redis being down.
    return json_response({"success": True, "status": "ok"})


@bp.get("/health/ready")
def ready() -> Response:
    res = resources()
    checks = {"postgres": _check(_ping_postgres), "redis": _check(res.pages.client.ping)}
    ok = all(check["ok"] for check in checks.values())
    return json_response(
        {"success": ok, "status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


def _ping_postgres() -> None:
    with read_connection(resources().pool, timeout=_READY_DB_TIMEOUT) as conn:
        conn.execute("SELECT 1")


def _check(probe: Callable[[], object]) -> dict[str, object]:
    start = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; only its type is shown (no hosts, no secrets)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


@bp.get("/api/cache/stats")
def cache_stats() -> Response:
    pages = resources().pages
    shared = pages.stats()  # hits/misses of every web process, from Redis
    counters = pages.counters
    hits, misses = shared["hits"], shared["misses"]
    lookups = (hits or 0) + (misses or 0)
    process = {
        "pid": os.getpid(),
        "hits": counters.hits,
        "misses": counters.misses,
        "errors": counters.errors,
        "bypassed": counters.bypassed,
        "fills": counters.fills,
        "coalesced": counters.coalesced,
        "fallbacks": counters.fallbacks,
        "hit_ratio": _ratio(counters.hits, counters.hits + counters.misses),
    }
    data = {
        "hits": hits,
        "misses": misses,
        "errors": counters.errors,  # this process's: errors cannot be counted in an unreachable Redis
        "hit_ratio": _ratio(hits or 0, lookups),
        "process": process,
    }
    return json_response({"success": True, "data": data})


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
