"""The monitor's figures for a request: one snapshot (web/monitor.py) from this process's pools.

Used by /health/tron-data-health, /api/monitor (the status page's data) and /metrics.
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
