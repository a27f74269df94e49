"""The `deliver_webhook` actor: POST one event to one subscription, signed, at least once.

A message names (subscription id, event id). The attempt reads both, skips a delivery already
made, signs the body (ledger.store.webhooks.sign) and POSTs it. A 2xx answer is delivered; anything
else (an error status, a refused or dropped connection, a timeout, an answer that never came) fails
the attempt, which is recorded and raised, so Dramatiq's retries send it again with exponential
backoff. The retry count is sized so that the backoffs add up to at least WEBHOOK_RETRY_HOURS
(`retries_for`); the last failure dead-letters the message (workers/deadletters.py) and marks the
delivery dead, and the dead-letter requeue (`ledger dead-letters requeue`) sends it again like any
other message. A receiver that processed a request whose answer was lost gets it again: the event
id in `Ledger-Event-Id` / `Idempotency-Key` is how it tells.

The request goes to the address checked against WEBHOOK_ALLOW_PRIVATE at this attempt (the URL's
host name is re-resolved, checked, and that address connected to, with the name as Host and TLS
server name), so a name that resolves elsewhere between check and connect gains nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import urllib3
from dramatiq.middleware import CurrentMessage

from ledger.config import Settings
from ledger.domain import PayloadError
from ledger.ops.metrics import Counters
from ledger.store.events import read_event
from ledger.store.webhooks import (
    DELIVERIES_METRIC,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Resolver,
    WebhookError,
    check_url,
    delivery_status,
    record_attempt,
    sign,
    signing_keys,
    system_resolver,
)

log = logging.getLogger(__name__)

WithConn = Callable[[Callable[[psycopg.Connection], Any]], Any]

USER_AGENT = "tron-stake-ledger-webhooks/1"
# Slack beyond the latest retry time before a pending delivery counts as lost (workers/relay.py).
DUE_GRACE_SECONDS = 60.0
_ERROR_LIMIT = 300  # characters of an error kept on the delivery row


class DeliveryFailed(Exception):
    """The receiver did not accept the event this time; Dramatiq retries the message."""


def retries_for(span_ms: float, min_backoff_ms: int, max_backoff_ms: int) -> int:
    """The fewest retries whose backoffs, each at its shortest (Dramatiq's jitter draws between the
    doubling and twice it, or between half and all of the cap: dramatiq.common.compute_backoff),
    add up to at least `span_ms`."""
    total, retries = 0.0, 0
    while total < span_ms:
        total += min(min_backoff_ms * 2.0 ** min(retries, 32), max_backoff_ms / 2)
        retries += 1
    return retries


def longest_backoff_ms(retries: int, min_backoff_ms: int, max_backoff_ms: int) -> float:
    """The longest delay Dramatiq can pick before retry number `retries` + 1."""
    return min(min_backoff_ms * 2.0 ** min(retries, 32) * 2, max_backoff_ms)


class Sender:
    """POSTs to webhook URLs over urllib3 pools kept per (scheme, address, port, host name)."""

    def __init__(self, settings: Settings, resolve: Resolver = system_resolver) -> None:
        self.allow_private = settings.webhook_allow_private
        self.timeout = urllib3.Timeout(
            connect=min(5.0, settings.webhook_timeout_seconds), read=settings.webhook_timeout_seconds
        )
        self.resolve = resolve
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; WebhookError for a URL refused now, urllib3's errors for the network's."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = check_url(url, allow_private=self.allow_private, resolve=self.resolve)[0]
        default_port = port == (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {**headers, "Host": host if default_port else f"{host}:{port}"}
        pool = self._pool(parts.scheme, address, port, host)
        response = pool.urlopen("POST", path, body=body, headers=headers, retries=False, redirect=False)
        return int(response.status)

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) >= 256:  # many receivers: start over rather than grow for ever
                    for old in self._pools.values():
                        old.close()
                    self._pools.clear()
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        address, port, timeout=self.timeout, maxsize=4, server_hostname=host, assert_hostname=host
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(address, port, timeout=self.timeout, maxsize=4)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def deliver(
    with_conn: WithConn,
    sender: Sender,
    settings: Settings,
    counters: Counters | None,
    subscription_id: Any,
    event_id: Any,
    *,
    max_retries: int,
) -> None:
    """One attempt at delivering event `event_id` to subscription `subscription_id` (see the module doc).
    `with_conn(fn)` runs `fn` on a pooled autocommit connection (waiting out a PostgreSQL outage): the
    reads before the request and the write after it are two calls, so a retried write never sends
    the request again."""
    for name, value in (("subscription id", subscription_id), ("event id", event_id)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PayloadError(f"{name} {value!r} is not a positive integer")

    def read(conn: psycopg.Connection) -> tuple[Any, str | None, dict[str, Any] | None]:
        return (
            signing_keys(conn, subscription_id),
            delivery_status(conn, subscription_id, event_id),
            read_event(conn, event_id),
        )

    keys, status, event = with_conn(read)
    if keys is None:
        log.info("webhook subscription %s was removed: event %s not delivered", subscription_id, event_id)
        return
    url, secrets, enabled = keys
    if status == "delivered":
        return
    if not enabled:
        return  # left pending: enabling the subscription sends it again (ledger.store.webhooks.set_enabled)
    if event is None:
        raise PayloadError(f"event {event_id} is not in the log")
    body = orjson.dumps(event, option=orjson.OPT_UTC_Z)  # as the feed writes it (web/responses.py)
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(body, stamp, secrets),
        EVENT_ID_HEADER: str(event_id),
        "Idempotency-Key": str(event_id),
    }
    code: int | None = None
    error: str | None = None
    try:
        code = sender.post(url, body, headers)
    except WebhookError as exc:
        error = str(exc)
    except urllib3.exceptions.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    delivered = code is not None and 200 <= code < 300
    message = CurrentMessage.get_current_message()
    retries = int(message.options.get("retries", 0)) if message is not None else 0
    last = retries >= max_retries
    due = DUE_GRACE_SECONDS + 2 * settings.webhook_timeout_seconds
    if not delivered:
        due += longest_backoff_ms(retries, settings.webhook_min_backoff_ms, settings.webhook_max_backoff_ms) / 1000
        error = error or f"HTTP {code}"
    with_conn(
        lambda conn: record_attempt(
            conn,
            subscription_id,
            event_id,
            status="delivered" if delivered else ("dead" if last else "pending"),
            code=code,
            error=None if delivered else (error or "")[:_ERROR_LIMIT],
            due_in_seconds=due,
        )
    )
    if counters is not None:
        counters.inc(DELIVERIES_METRIC, {"result": "sent" if delivered else "failed"})
    if not delivered:
        raise DeliveryFailed(f"webhook {subscription_id} event {event_id}: {error} (attempt {retries + 1})")
