"""Middleware recording each message's final failure in the `dead_letters` table.

Dramatiq's own dead-letter copy (the Redis XQ) carries the traceback of the attempt *before* the
last one, and none for a message that failed on its first attempt (dramatiq/middleware/retries.py stores
`options.traceback` on the re-enqueued copy), so the final
exception is written here, while the worker still has it.

Placement matters: `after_*` hooks run in reverse middleware order, so this must sit *before*
Retries in the list (`broker.add_middleware(DeadLetters(...), before=Retries)`) for its
`after_process_message` to run after Retries has decided whether the message failed for good.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from psycopg_pool import ConnectionPool

from ledger.deadletters import record_dead_letter

log = logging.getLogger(__name__)


class DeadLetters(Middleware):
    def __init__(self, pool: ConnectionPool, *, timeout: float = 2.0) -> None:
        self.pool = pool
        # Short: this runs on a worker thread, and when PostgreSQL is down the broker's XQ copy
        # still holds the message, so waiting longer buys little.
        self.timeout = timeout
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # Retries bumps options["retries"] only for retryable failures; remember the count the
        # attempt started with, so the row says how many retries preceded the final failure.
        self._local.started = (message.message_id, message.options.get("retries", 0))

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if message.failed:
            self._record(message, exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # AgeLimit fails a message by skipping it: no exception reaches after_process_message.
        if message.failed:
            self._record(message, None)

    def _record(self, message: Any, exception: BaseException | None) -> None:
        started = getattr(self._local, "started", None)
        retries = started[1] if started and started[0] == message.message_id else message.options.get("retries", 0)
        if exception is None:
            error_type, error = "SkipMessage", "message skipped (age limit exceeded)"
        else:
            kind = type(exception)
            error_type = (
                kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            )
            error = str(exception) or repr(exception)
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                record_dead_letter(
                    conn,
                    message_id=message.message_id,
                    queue_name=q_name(message.queue_name),
                    actor_name=message.actor_name,
                    args=list(message.args),
                    error_type=error_type,
                    error=error,
                    retries=retries,
                    redis_message_id=message.options.get("redis_message_id"),
                )
        except Exception as exc:  # best effort: the broker's XQ still has the message
            log.error("could not record dead letter %s (%s: %s): %s", message.message_id, error_type, error, exc)
        else:
            log.warning(
                "dead-lettered message %s of %s: %s: %s", message.message_id, message.actor_name, error_type, error
            )
