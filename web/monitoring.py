"""The monitor's figures for a request: one snapshot (web/monitor.py) from this process's pools.

Used by /health/tron-data-health, /api/monitor (the status page's data) and /metrics. A snapshot
costs a dozen queries (the block -> stored lag percentiles read the last hour's records), so it is
made at most once per MONITOR_CACHE_SECONDS per process and shared by every request in that time:
a flood of those routes costs PostgreSQL one snapshot per interval, not one per request, and
requests that arrive while one is being made wait for it rather than make their own.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import PoolTimeout

from ledger.coordination.inflight import is_redis_broker
from web import monitor
from web.pg import read_connection
from web.resources import resources

_DB_TIMEOUT = 0.3  # seconds to get a pooled connection: a monitor must answer while PostgreSQL is down


def current_snapshot() -> dict[str, Any]:
    """The process's snapshot, made now if the last one is older than MONITOR_CACHE_SECONDS (a copy:
    callers add their own parts)."""
    res = resources()
    shared = res.snapshots
    with shared.lock:
        if res.clock() - shared.made_at >= res.settings.monitor_cache_seconds:
            shared.value = _snapshot()
            shared.made_at = res.clock()
        return dict(shared.value)


def _snapshot() -> dict[str, Any]:
    res = resources()
    other_broker = None if is_redis_broker(res.broker) else res.broker
    try:
        with read_connection(res.pool, timeout=_DB_TIMEOUT) as conn:
            return monitor.snapshot(conn, res.broker_redis, res.pages.client, res.settings, other_broker=other_broker)
    except PoolTimeout as exc:
        # No connection at all: every PostgreSQL part is unknown, the Redis parts still answer.
        return monitor.snapshot_without_database(
            res.broker_redis, res.pages.client, res.settings, exc, other_broker=other_broker
        )
