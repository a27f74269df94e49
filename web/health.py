"""Liveness, readiness, ingest heads and cache statistics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flask import Blueprint, Response

from ledger.accounting import read_heads
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
    ingest: list[dict[str, object]] = []
    checks = {"postgres": _check(lambda: ingest.append(_ingest_heads())), "redis": _check(res.pages.client.ping)}
    ok = all(check["ok"] for check in checks.values())
    # Ingest lag is reported, not judged: a node or worker backlog does not stop the API serving
    # what it has. `checkpoint` is how far the chain was read and enqueued, `persisted` how far
    # every operation is in PostgreSQL (see docs/RELIABILITY.md).
    body = {
        "success": ok,
        "status": "ready" if ok else "unavailable",
        "checks": checks,
        "ingest": ingest[0] if ingest else None,
    }
    return json_response(body, 200 if ok else 503)


@bp.get("/api/ingest")
def ingest() -> Response:
    """Chain head, solidified block, checkpoint and persisted watermark, with the lags between them."""
    return json_response({"success": True, "data": _ingest_heads()})


def _ingest_heads() -> dict[str, object]:
    with read_connection(resources().pool, timeout=_READY_DB_TIMEOUT) as conn:
        return read_heads(conn).to_dict()


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
