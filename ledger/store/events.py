"""The event log: what the ledger tells the platform's other services, kept in PostgreSQL.

Each event is written in the transaction of the change it describes (an outbox), so an event
exists exactly when its change committed:

- `operation.pending|confirmed|failed|orphaned`: a record's status or block changed. Written by
  triggers on the record tables (sql/020_events.sql), whichever code made the change; the payload
  carries the record in the API's native shape.
- `delegation.lock_ended`, `unstake.withdrawable`: chain time passed a lock's end or a lot's
  maturity (ledger/store/clock.py), once each (`once_key`).
- `drift.detected`: state reconciliation found a new difference (web/drift.py's table).
- `listener.stalled`: the active listener stopped advancing (workers/relay.py).

Order. Rows get `id` from a sequence when written, which is not the order they commit in; a
reader paging by `id` could pass over an event whose transaction is still open and never see it.
So readers page by `seq`, which the relay (`sequence`) gives to committed events under an
exclusive lock: each run numbers what has committed since the last one, after everything the last
one numbered, so the order of `seq` is the order events became visible, and a cursor on it never
skips one. `seq` is the event's public id, the cursor of the feed and the idempotency key of a
webhook; it increases per account as it does overall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

OPERATION_PENDING = "operation.pending"
OPERATION_CONFIRMED = "operation.confirmed"
OPERATION_FAILED = "operation.failed"
OPERATION_ORPHANED = "operation.orphaned"
LOCK_ENDED = "delegation.lock_ended"
WITHDRAWABLE = "unstake.withdrawable"
DRIFT_DETECTED = "drift.detected"
LISTENER_STALLED = "listener.stalled"
EVENT_TYPES = (
    OPERATION_PENDING,
    OPERATION_CONFIRMED,
    OPERATION_FAILED,
    OPERATION_ORPHANED,
    LOCK_ENDED,
    WITHDRAWABLE,
    DRIFT_DETECTED,
    LISTENER_STALLED,
)

# Advisory lock class (first key of the two-int form) of the sequencer, private to this module.
_LOCK_SEQUENCE = 0x4C455651  # "LEVQ"
SEQUENCE_BATCH = 20_000  # events numbered per run; the next run takes the rest

_COLUMNS = "seq, type, account, block_num, block_time, created_at, payload"


def record_event(
    conn: psycopg.Connection,
    event_type: str,
    account: str | None,
    payload: Mapping[str, Any],
    *,
    block_num: int | None = None,
    block_time: datetime | None = None,
    once_key: str | None = None,
) -> bool:
    """Write an event in the caller's transaction; False when `once_key` was written before."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    cur = conn.execute(
        "INSERT INTO events (type, account, block_num, block_time, payload, once_key)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (once_key) DO NOTHING",
        (event_type, account, block_num, block_time, Jsonb(dict(payload)), once_key),
    )
    return cur.rowcount == 1


def sequence(conn: psycopg.Connection, limit: int = SEQUENCE_BATCH) -> int:
    """Number the committed events that have no `seq` yet, in write order; return how many.

    `conn` in autocommit mode. The lock is exclusive and held to the commit, so runs are serial and
    each one's numbers follow the last one's; the lock is a statement of its own, so the numbering
    statement's snapshot is taken after the last run committed and sees its numbers."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (_LOCK_SEQUENCE,))
        cur = conn.execute(
            "WITH base AS (SELECT coalesce(max(seq), 0) AS n FROM events),"
            " todo AS (SELECT id, row_number() OVER (ORDER BY id) AS r"
            "          FROM (SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT %s) t)"
            " UPDATE events e SET seq = base.n + todo.r FROM base, todo WHERE e.id = todo.id",
            (limit,),
        )
        return cur.rowcount


def last_seq(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def read_events(
    conn: psycopg.Connection,
    *,
    after: int,
    limit: int,
    account: str | None = None,
    types: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Events with `seq` > `after`, oldest first, as the feed and webhooks show them."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq > %(after)s"
            " AND (%(account)s::text IS NULL OR account = %(account)s)"
            " AND (cardinality(%(types)s::text[]) = 0 OR type = ANY(%(types)s::text[]))"
            " ORDER BY seq LIMIT %(limit)s",
            {"after": after, "account": account, "types": list(types), "limit": limit},
        )
        return [event_json(row) for row in cur.fetchall()]


def read_event(conn: psycopg.Connection, seq: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = %s", (seq,)).fetchone()
    return None if row is None else event_json(row)


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the API and webhooks show it (datetimes left for the JSON encoder). A record's
    times are kept as epoch milliseconds (cheaper to write: sql/025_event_triggers.sql) and shown as
    the record lists show them."""
    payload = row["payload"]
    record = payload.get("record") if isinstance(payload, dict) else None
    if isinstance(record, dict):
        for name in ("block_time", "lock_expire_time"):
            if isinstance(record.get(name), int):
                record[name] = datetime.fromtimestamp(record[name] / 1000, tz=UTC)
    return {
        "id": row["seq"],
        "type": row["type"],
        "account": row["account"],
        "block_num": row["block_num"],
        "block_time": row["block_time"],
        "created_at": row["created_at"],
        "data": row["payload"],
    }
