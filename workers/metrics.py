"""Worker metrics: messages ok / retried / dead per actor, first-attempt results, durations.

Counted in memory and flushed to the broker's Redis once a second (ledger/ops/metrics.py), so the web's
`/metrics` shows the sum over every worker process of every host.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from ledger.ops.metrics import Counters, Flusher, metrics_client

MESSAGES = "ledger_worker_messages_total"  # {actor, outcome=ok|retried|dead}
FIRST_ATTEMPTS = "ledger_worker_first_attempts_total"  # {actor, result=ok|failed}: sync success rate
DURATION = "ledger_worker_message_duration_seconds"  # {actor}
# {actor}: messages of a lease term no longer current, dropped unapplied (ledger/coordination/lease.py)
STALE_MESSAGES = "ledger_worker_stale_messages_total"


class Metrics(Middleware):
    def __init__(self, redis_url: str, counters: Counters | None = None) -> None:
        self.redis_url = redis_url  # where counters go, whatever the broker (ledger/ops/metrics.py)
        self.counters = counters or Counters()
        self._local = threading.local()
        self._flusher: Flusher | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: object) -> None:
        self._flusher = Flusher(self.counters, metrics_client(self.redis_url)).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: object) -> None:
        if self._flusher is not None:
            self._flusher.stop()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.started = (message.message_id, time.perf_counter(), message.options.get("retries", 0))

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        started = getattr(self._local, "started", None)
        if started is None or started[0] != message.message_id:
            return
        _, start, retries = started
        actor = message.actor_name
        self.counters.observe(DURATION, time.perf_counter() - start, {"actor": actor})
        if exception is None:
            self.counters.inc(MESSAGES, {"actor": actor, "outcome": "ok"})
        elif not message.failed:
            self.counters.inc(MESSAGES, {"actor": actor, "outcome": "retried"})
        # dead ones are counted in before_nack, which every dead message passes (unknown actors too)
        if retries == 0:
            self.counters.inc(FIRST_ATTEMPTS, {"actor": actor, "result": "ok" if exception is None else "failed"})

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self.counters.inc(MESSAGES, {"actor": message.actor_name, "outcome": "dead"})
