"""Liveness, readiness, ingest heads, the data health check and cache statistics.

- /health/live checks nothing outside the process (a restart would not fix PostgreSQL or Redis);
- /health/ready checks PostgreSQL and the cache Redis, with the ingest heads: 503 only when
  PostgreSQL fails. Ready means "can serve": without the cache every page is read from PostgreSQL
  (slower, still right), so a dead or hung cache is `degraded` with 200; a load balancer that
  took every instance out for it would turn a cache outage into a full one;
- /health/tron-data-health says whether the data is fresh: `healthy` when the listener is online
  and reading the chain, the data latency is under 300,000 ms and the cache hit rate over the
  recent window is above 0.8 (judged from HIT_RATE_MIN_READS reads on); `warning` otherwise;
  `error` (HTTP 500) when it cannot tell (a dependency it reads failed) or when the node is behind
  the listener's checkpoint (nothing is read until it passes it). The body has each rule with its
  result and the figures it used (web/monitor.py says how each is measured).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flask import Blueprint, Response

from ledger.store.accounting import read_heads
from web.monitor import health_rules, listener_status, verdict
from web.monitoring import current_snapshot
from web.pg import read_connection
from web.resources import resources
from web.responses import json_response

bp = Blueprint("health", __name__)

# Seconds to get a pooled connection: within an answer's 0.5-s budget while PostgreSQL is away.
_READY_DB_TIMEOUT = 0.3


@bp.get("/health/live")
def live() -> Response:
    # No dependency checks: a restart would not fix PostgreSQL or Redis being down.
    return json_response({"success": True, "status": "ok"})


@bp.get("/health/ready")
def ready() -> Response:
    res = resources()
    ingest: list[dict[str, object]] = []
    checks = {"postgres": _check(lambda: ingest.append(_ingest_heads())), "redis": _check(res.pages.client.ping)}
    ok = bool(checks["postgres"]["ok"])
    status = ("ready" if checks["redis"]["ok"] else "degraded") if ok else "unavailable"
    # Ingest lag is reported, not judged: a node or worker backlog does not stop the API serving
    # what it has. `checkpoint` is how far the chain was read and enqueued, `persisted` how far
    # every operation is in PostgreSQL (see docs/RELIABILITY.md).
    body = {
        "success": ok,
        "status": status,
        "checks": checks,
        "ingest": ingest[0] if ingest else None,
    }
    return json_response(body, 200 if ok else 503)


@bp.get("/api/ingest")
def ingest() -> Response:
    """Chain head, solidified block, checkpoint and persisted watermark, with the lags between them."""
    return json_response({"success": True, "data": _ingest_heads()})


@bp.get("/health/tron-data-health")
def tron_data_health() -> Response:
    snap = current_snapshot()
    rules = health_rules(snap, min_reads=resources().settings.hit_rate_min_reads)
    status, reasons = verdict(rules)
    body = {
        "success": status != "error",
        "status": status,
        "reasons": reasons,
        "rules": rules,
        "listener": snap["listener"],
        "data_latency": snap["data_latency"],
        "cache": snap["cache"],
        "generated_at": snap["generated_at"],
    }
    return json_response(body, 500 if status == "error" else 200)


def _ingest_heads() -> dict[str, object]:
    res = resources()
    with read_connection(res.pool, timeout=_READY_DB_TIMEOUT) as conn:
        heads = read_heads(conn).to_dict()
        listener = listener_status(conn, res.settings)
    # `head` is the head recorded with the last checkpoint; what the listener knows now comes from
    # its heartbeat. A lag the listener cannot vouch for (it is down, or its node is behind the
    # checkpoint) is unknown, with the reason, not the last figure it wrote.
    heads["listener"] = {
        k: listener[k] for k in ("status", "state", "state_detail", "head_block", "node_behind_by", "beat_age_s")
    }
    heads["lag_unknown"] = unknown = listener["blocks_behind_unknown"]
    if unknown is not None:
        lags = heads["lag_blocks"]
        assert isinstance(lags, dict)
        lags["listener"] = lags["total"] = None
    return heads


def _check(probe: Callable[[], object]) -> dict[str, object]:
    start = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; only its type is shown (no hosts, no secrets)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


@bp.get("/api/cache/stats")
def cache_stats() -> Response:
    pages = resources().pages
    shared = pages.stats()  # hits/misses of every web process, from Redis
    counters = pages.counters
    hits, misses, local_hits = shared["hits"], shared["misses"], shared["local_hits"]
    lookups = (hits or 0) + (misses or 0) + (local_hits or 0)
    process = {
        "pid": os.getpid(),
        "hits": counters.hits,
        "misses": counters.misses,
        "errors": counters.errors,
        "bypassed": counters.bypassed,
        "fills": counters.fills,
        "coalesced": counters.coalesced,
        "fallbacks": counters.fallbacks,
        "local_hits": counters.local_hits,
        "hit_ratio": _ratio(counters.hits + counters.local_hits, counters.hits + counters.local_hits + counters.misses),
    }
    data = {
        "hits": hits,
        "misses": misses,
        "local_hits": local_hits,  # served from a process's micro-cache, counted with its next Redis read
        "errors": counters.errors,  # this process's: errors cannot be counted in an unreachable Redis
        "hit_ratio": _ratio((hits or 0) + (local_hits or 0), lookups),
        "process": process,
    }
    return json_response({"success": True, "data": data})


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
