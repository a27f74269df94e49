"""What the views use, made once per process by `create_app` and reached through `resources()`.

Kept apart from `web.app` so that blueprints import this module, not the factory that imports them
(the same split as Flask's tutorial, where views call `get_db()` from `flaskr.db`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from flask import current_app
from psycopg_pool import ConnectionPool

from ledger.clocks import Clock
from ledger.config import Settings
from ledger.store.cache import PageCache
from web.directory import AccountDirectory


@dataclass(frozen=True)
class Resources:
    """What the views use, made once per process by `create_app`."""

    settings: Settings
    pool: ConnectionPool
    pages: PageCache
    accounts: AccountDirectory
    broker: dramatiq.Broker  # admin requeues
    # The Redis at REDIS_URL: the counters processes push (ledger/ops/metrics.py) and, with the Redis
    # broker, its queues, acks and dead-letter sets (read with short timeouts).
    broker_redis: redis.Redis
    admin_pool: ConnectionPool | None = None  # read-write, only when ADMIN_TOKEN is set
    snapshots: SharedSnapshot = field(default_factory=lambda: SharedSnapshot())  # web/monitoring.py
    clock: Clock = time.monotonic  # the one the pages and the directory were given
    sleep: Callable[[float], object] = time.sleep  # a request's waits on that clock (the event stream's polls)


class SharedSnapshot:
    """A process's last monitor snapshot and when it was made (web/monitoring.py)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made_at = float("-inf")
        self.value: dict[str, Any] = {}


def resources() -> Resources:
    return current_app.extensions["ledger"]  # type: ignore[no-any-return]
