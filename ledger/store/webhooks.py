"""Webhook subscriptions and deliveries, and the signature a receiver checks.

A subscription is a URL, the event types and accounts it wants (empty: all) and a secret. Each
matching event gets a delivery row (workers/relay.py makes them, in event order) and a
message the worker's `deliver_webhook` actor sends (workers/webhooks.py), at least once.

Signature (what docs/API.md shows a receiver checking): the body is POSTed with
`Ledger-Signature: t=<unix seconds>,v1=<hex>` where hex = HMAC-SHA256(secret, "<t>." + body).
During a secret rotation the header carries one `v1=` per live secret (the new one first), so a
receiver still holding the old secret keeps verifying until it switches. The timestamp is signed
with the body, so a receiver can refuse an old request replayed later (docs/API.md uses 5 min).
`Ledger-Event-Id` (also `Idempotency-Key`) is the event's id: a receiver that remembers the ids it
processed ignores the duplicates at-least-once delivery can bring.

URLs: http(s) only, and not to a private, loopback, link-local or otherwise non-public address
unless WEBHOOK_ALLOW_PRIVATE is set: a webhook must not become a way to make the ledger's hosts
reach the operator's internal network (SSRF). Checked when a subscription is added and again on
every delivery, against the addresses the name resolves to then (workers/webhooks.py connects to
the address it checked).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from ledger.chain.address import is_address
from ledger.store.events import EVENT_TYPES, last_seq

SIGNATURE_HEADER = "Ledger-Signature"
EVENT_ID_HEADER = "Ledger-Event-Id"
SECRET_PREFIX = "whsec_"
DELIVERIES_METRIC = "ledger_webhook_deliveries_total"  # {result=sent|failed}: pushed by workers (ledger/ops/metrics.py)
DEFAULT_ROTATION_OVERLAP_SECONDS = 24 * 3600

Resolver = Callable[[str, int], list[str]]


class WebhookError(ValueError):
    """A subscription that cannot be made as asked (bad URL, type or account); the message says why."""


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    types: tuple[str, ...]
    accounts: tuple[str, ...]
    enabled: bool
    after_seq: int
    rotating: bool  # a previous secret is still signed with
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "types": list(self.types),
            "accounts": list(self.accounts),
            "enabled": self.enabled,
            "after_event_id": self.after_seq,
            "rotating_secret": self.rotating,
            "created_at": self.created_at,
        }


# -- signing -------------------------------------------------------------------------------------------


def sign(body: bytes, timestamp: int, keys: Sequence[str]) -> str:
    """The Ledger-Signature header value for `body` sent at `timestamp` (unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()}" for key in keys]
    return ",".join(parts)


def verify(body: bytes, header: str, secret: str, now: float, tolerance: float = 300.0) -> bool:
    """True if `header` signs `body` with `secret` and its timestamp is within `tolerance` of `now`."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for name, value in fields if name == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = sign(body, int(stamps[0]), [secret]).split(",")[1][3:]
    return any(name == "v1" and hmac.compare_digest(value, expected) for name, value in fields)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


# -- URLs ------------------------------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookError(f"webhook host {host!r} does not resolve: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolver) -> list[str]:
    """The addresses `url`'s host resolves to, all public (unless `allow_private`); WebhookError if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"webhook URL must be http(s)://host/...; got {url[:100]!r}")
    if parts.username or parts.password:
        raise WebhookError("webhook URL must not carry credentials (the signature authenticates the ledger)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookError(f"webhook URL has a bad port: {url[:100]!r}") from None
    addresses = resolve(parts.hostname, port)
    if not addresses:
        raise WebhookError(f"webhook host {parts.hostname!r} resolves to no address")
    if not allow_private:
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not address.is_global or address.is_multicast:
                raise WebhookError(
                    f"webhook host {parts.hostname!r} resolves to {text}, which is not a public address"
                    " (set WEBHOOK_ALLOW_PRIVATE=1 to allow private and loopback addresses)"
                )
    return addresses


def _check_filters(types: Iterable[str], accounts: Iterable[str]) -> tuple[list[str], list[str]]:
    type_list = sorted({t.strip() for t in types if t.strip()})
    unknown = [t for t in type_list if t not in EVENT_TYPES]
    if unknown:
        raise WebhookError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    account_list = sorted({a.strip() for a in accounts if a.strip()})
    bad = [a for a in account_list if not (a.startswith("T") and is_address(a))]
    if bad:
        raise WebhookError(f"not a base58 TRON address: {', '.join(repr(a[:40]) for a in bad)}")
    return type_list, account_list


# -- subscriptions ---------------------------------------------------------------------------------------

_SUB_COLUMNS = "id, url, types, accounts, enabled, after_seq, previous_secret IS NOT NULL AS rotating, created_at"


def _subscription(row: dict[str, Any]) -> Subscription:
    return Subscription(
        id=row["id"],
        url=row["url"],
        types=tuple(row["types"]),
        accounts=tuple(row["accounts"]),
        enabled=row["enabled"],
        after_seq=row["after_seq"],
        rotating=row["rotating"],
        created_at=row["created_at"],
    )


def add_subscription(
    conn: psycopg.Connection,
    url: str,
    *,
    types: Iterable[str] = (),
    accounts: Iterable[str] = (),
    allow_private: bool,
    from_start: bool = False,
    resolve: Resolver = system_resolver,
) -> tuple[Subscription, str]:
    """Add a subscription and return it with its secret (shown once). It receives the events written
    from now on, or every event still in the log with `from_start`."""
    check_url(url, allow_private=allow_private, resolve=resolve)
    type_list, account_list = _check_filters(types, accounts)
    secret = new_secret()
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO webhook_subscriptions (url, types, accounts, secret, after_seq)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_SUB_COLUMNS}",
            (url, type_list, account_list, secret, 0 if from_start else last_seq(conn)),
        ).fetchone()
    assert row is not None
    return _subscription(row), secret


def list_subscriptions(conn: psycopg.Connection) -> list[Subscription]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions ORDER BY id").fetchall()
    return [_subscription(row) for row in rows]


def get_subscription(conn: psycopg.Connection, sub_id: int) -> Subscription | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE id = %s", (sub_id,)).fetchone()
    return None if row is None else _subscription(row)


def set_enabled(conn: psycopg.Connection, sub_id: int, enabled: bool) -> Subscription | None:
    """Disable (deliveries wait) or enable (they go out again, the waiting ones at once)."""
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "UPDATE webhook_subscriptions SET enabled = %s, updated_at = now()"
                f" WHERE id = %s RETURNING {_SUB_COLUMNS}",
                (enabled, sub_id),
            ).fetchone()
        if row is not None and enabled:
            # Their messages were dropped while it was off: the relay sends them again now.
            conn.execute(
                "UPDATE webhook_deliveries SET due_at = '-infinity' WHERE subscription_id = %s AND status = 'pending'",
                (sub_id,),
            )
    return None if row is None else _subscription(row)


def remove_subscription(conn: psycopg.Connection, sub_id: int) -> bool:
    """Delete a subscription and its deliveries (messages still queued find nothing and end)."""
    return conn.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (sub_id,)).rowcount == 1


def rotate_secret(
    conn: psycopg.Connection, sub_id: int, overlap_seconds: float = DEFAULT_ROTATION_OVERLAP_SECONDS
) -> str | None:
    """A new secret for the subscription (returned, shown once); the old one is signed with too for
    `overlap_seconds`, so receivers can switch without refusing a delivery."""
    row = conn.execute(
        "UPDATE webhook_subscriptions SET previous_secret = secret, secret = %s,"
        " previous_until = now() + make_interval(secs => %s), updated_at = now() WHERE id = %s RETURNING id",
        (new_secret(), overlap_seconds, sub_id),
    ).fetchone()
    if row is None:
        return None
    found = conn.execute("SELECT secret FROM webhook_subscriptions WHERE id = %s", (sub_id,)).fetchone()
    return None if found is None else str(found[0])


def signing_keys(conn: psycopg.Connection, sub_id: int) -> tuple[str, list[str], bool] | None:
    """(url, the secrets to sign with, enabled) of a subscription; None if it was removed."""
    row = conn.execute(
        "SELECT url, secret, CASE WHEN previous_until > now() THEN previous_secret END, enabled"
        " FROM webhook_subscriptions WHERE id = %s",
        (sub_id,),
    ).fetchone()
    if row is None:
        return None
    url, secret, previous, enabled = row
    return str(url), [str(secret)] + ([str(previous)] if previous else []), bool(enabled)


# -- deliveries ------------------------------------------------------------------------------------------


def delivery_status(conn: psycopg.Connection, sub_id: int, seq: int) -> str | None:
    row = conn.execute(
        "SELECT status FROM webhook_deliveries WHERE subscription_id = %s AND event_seq = %s", (sub_id, seq)
    ).fetchone()
    return None if row is None else str(row[0])


def record_attempt(
    conn: psycopg.Connection,
    sub_id: int,
    seq: int,
    *,
    status: str,
    code: int | None,
    error: str | None,
    due_in_seconds: float,
) -> None:
    """One attempt's outcome. `due_in_seconds`: how long until the next attempt must have run."""
    conn.execute(
        "INSERT INTO webhook_deliveries AS d (subscription_id, event_seq, status, attempts, last_code, last_error,"
        " last_attempt_at, delivered_at, due_at)"
        " SELECT %(sub)s, %(seq)s, %(status)s, 1, %(code)s, %(error)s, now(),"
        " CASE WHEN %(status)s = 'delivered' THEN now() END, now() + make_interval(secs => %(due)s)"
        " WHERE EXISTS (SELECT 1 FROM webhook_subscriptions WHERE id = %(sub)s)"
        " ON CONFLICT (subscription_id, event_seq) DO UPDATE SET"
        " status = CASE WHEN d.status = 'delivered' THEN 'delivered' ELSE EXCLUDED.status END,"
        " attempts = d.attempts + 1, last_code = EXCLUDED.last_code, last_error = EXCLUDED.last_error,"
        " last_attempt_at = now(), delivered_at = coalesce(d.delivered_at, EXCLUDED.delivered_at),"
        " due_at = EXCLUDED.due_at",
        {"sub": sub_id, "seq": seq, "status": status, "code": code, "error": error, "due": due_in_seconds},
    )


def delivery_figures(conn: psycopg.Connection) -> dict[str, Any]:
    """Deliveries waiting (pending), given up (dead) and the age of the oldest event not delivered."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE d.status = 'pending'), count(*) FILTER (WHERE d.status = 'dead'),"
        " extract(epoch FROM now() - min(e.created_at))"
        " FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.status <> 'delivered'"
    ).fetchone()
    subs = conn.execute(
        "SELECT count(*) FILTER (WHERE enabled), count(*) FILTER (WHERE NOT enabled) FROM webhook_subscriptions"
    ).fetchone()
    pending, dead, oldest = row if row else (0, 0, None)
    enabled, disabled = subs if subs else (0, 0)
    return {
        "subscriptions": {"enabled": int(enabled), "disabled": int(disabled)},
        "pending": int(pending),
        "dead": int(dead),
        "oldest_undelivered_s": None if oldest is None else round(float(oldest), 3),
    }
