"""Middleware recording every message that ends dead in the `dead_letters` table.

Whatever the reason a message dies (retries exhausted, a permanent error, an actor this worker does
not know, an age limit), the worker rejects it with `nack`, which moves it to the broker's
dead-letter set (the XQ). So the row is written in `before_nack`, the one hook all of them pass
through (dramatiq/worker.py: `post_process_message`), while the message still carries its final
exception (`stuff_exception`, cleared only after post-processing). The XQ copy alone would not do:
its traceback is that of the attempt *before* the last one, and a message that failed on its first
attempt or never reached an actor has none.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage
from psycopg_pool import ConnectionPool

from ledger.store.deadletters import EXPIRED, PERMANENT_ERROR, RETRIES_EXHAUSTED, UNKNOWN_ACTOR, record_dead_letter

log = logging.getLogger(__name__)


class DeadLetters(Middleware):
    def __init__(self, pool: ConnectionPool, *, timeout: float = 2.0, secrets: Iterable[str] = ()) -> None:
        self.pool = pool
        self.secrets = tuple(secrets)  # redacted from the recorded error and traceback
        # Short: this runs on a worker thread, and when PostgreSQL is down the broker's XQ copy
        # still holds the message (ledger.store.deadletters.adopt_broker_dead_letters records it later).
        self.timeout = timeout
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # Retries bumps options["retries"] only for retryable failures; remember the count the
        # attempt started with, so the row says how many attempts were made.
        self._local.started = (message.message_id, message.options.get("retries", 0))

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        exception: BaseException | None = getattr(message, "_exception", None)
        started = getattr(self._local, "started", None)
        ran = started is not None and started[0] == message.message_id and not isinstance(exception, SkipMessage)
        retries = started[1] if ran and started else int(message.options.get("retries", 0))
        attempts = retries + 1 if ran else retries
        if isinstance(exception, ActorNotFound):
            reason, attempts = UNKNOWN_ACTOR, 0
        elif exception is None or isinstance(exception, SkipMessage):
            reason = EXPIRED
        elif message.options.get("retries", 0) > retries:
            reason = RETRIES_EXHAUSTED  # Retries counted this failure: it was retryable
        else:
            reason = PERMANENT_ERROR
        if exception is None:
            error_type, error, trace = "SkipMessage", "message skipped (age limit exceeded)", None
        else:
            kind = type(exception)
            error_type = (
                kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            )
            error = str(exception) or repr(exception)
            trace = "".join(traceback.format_exception(exception))
        try:
            with self.pool.connection(timeout=self.timeout) as conn:
                record_dead_letter(
                    conn,
                    message_id=message.message_id,
                    queue_name=q_name(message.queue_name),
                    actor_name=message.actor_name,
                    args=list(message.args),
                    kwargs=dict(message.kwargs),
                    reason=reason,
                    error_type=error_type,
                    error=error,
                    traceback=trace,
                    attempts=attempts,
                    retries=retries,
                    redis_message_id=message.options.get("redis_message_id"),
                    secrets=self.secrets,
                )
        except Exception as exc:  # noqa: BLE001 - best effort: the broker's XQ still has the message
            log.error("could not record dead letter %s (%s: %s): %s", message.message_id, error_type, error, exc)
        else:
            log.warning(
                "dead-lettered message %s of %s (%s after %d attempt(s)): %s: %s%s",
                message.message_id,
                message.actor_name,
                reason,
                attempts,
                error_type,
                error,
                _where(message),
                extra=_context(message),
            )


def _context(message: Any) -> dict[str, Any]:
    """Block, tx and account of a persist_operation message (of the first operation of a
    persist_operations group), for the log line (and JSON logs)."""
    payload = message.args[0] if message.args else None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return {}
    context = {"block": payload.get("block_num"), "tx": payload.get("tx_id"), "account": payload.get("owner_address")}
    return {k: v for k, v in context.items() if v is not None}


def _where(message: Any) -> str:
    context = _context(message)
    return "".join(f" {k}={v}" for k, v in context.items()) if context else ""
