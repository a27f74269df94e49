"""Dead letters: worker messages that ended dead, as recorded in PostgreSQL and held by the broker.

Every message a worker rejects for good (retries exhausted, a permanent error, an actor this worker
does not know, an age limit) passes through Dramatiq's `nack`, where the worker's middleware
(workers/deadletters.py) writes one `dead_letters` row with the final exception and traceback.
If that write failed (PostgreSQL down at that moment), the broker's own dead-letter set (the XQ)
still holds the message: `adopt_broker_dead_letters` turns such entries into rows, so the list
never misses one. The CLI (`ledger dead-letters`) and the admin API use these functions.

Requeueing deletes the row and enqueues in one transaction that commits after the enqueue: a crash
in between rolls the delete back and leaves a duplicate message, which persistence ignores (upserts
by chain identity), never a loss. The new message starts with no retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dramatiq
import psycopg
import redis
from dramatiq.brokers.redis import RedisBroker
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ledger.ops.logs import Redactor

# Why a message ended dead; set by the worker's middleware.
RETRIES_EXHAUSTED = "retries_exhausted"
PERMANENT_ERROR = "permanent_error"
UNKNOWN_ACTOR = "unknown_actor"
EXPIRED = "expired"
UNRECORDED = "unrecorded"  # found only in the broker's XQ (the worker could not write the row)

_COLUMNS = (
    "id, message_id, queue_name, actor_name, args, kwargs, reason, error_type, error, traceback,"
    " attempts, retries, failed_at, redis_message_id"
)


def record_dead_letter(
    conn: psycopg.Connection,
    *,
    message_id: str,
    queue_name: str,
    actor_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    reason: str = RETRIES_EXHAUSTED,
    error_type: str,
    error: str,
    traceback: str | None = None,
    attempts: int = 0,
    retries: int = 0,
    redis_message_id: str | None = None,
    secrets: Iterable[str] = (),
) -> int:
    """Insert or replace the dead letter of `message_id` (the caller commits); return its id.

    One row per message id: recording the same failure twice (a retried nack) is harmless. The
    error and traceback can hold what a node answered, so `secrets` (TRON_API_KEY) are redacted
    from them in every form a node may echo them (ledger.ops.logs.Redactor).
    """
    redact = Redactor(secrets)
    error = redact(error)
    traceback = redact(traceback) if traceback is not None else None
    row = conn.execute(
        "INSERT INTO dead_letters (message_id, queue_name, actor_name, args, kwargs, reason, error_type, error,"
        " traceback, attempts, retries, redis_message_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (message_id) DO UPDATE SET queue_name = EXCLUDED.queue_name,"
        " actor_name = EXCLUDED.actor_name, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,"
        " reason = EXCLUDED.reason, error_type = EXCLUDED.error_type, error = EXCLUDED.error,"
        " traceback = EXCLUDED.traceback, attempts = EXCLUDED.attempts, retries = EXCLUDED.retries,"
        " redis_message_id = EXCLUDED.redis_message_id, failed_at = now()"
        " RETURNING id",
        (
            message_id,
            queue_name,
            actor_name,
            Jsonb(list(args)),
            Jsonb(dict(kwargs or {})),
            reason,
            error_type,
            error,
            traceback,
            attempts,
            retries,
            redis_message_id,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def list_dead_letters(
    conn: psycopg.Connection,
    *,
    limit: int = 50,
    before_id: int | None = None,
    actor: str | None = None,
    error: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; pass the last id of a page as `before_id` for the next one (keyset paging).

    `actor` matches the actor name exactly; `error` is a case-insensitive substring of the
    exception class or message.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM dead_letters"
            " WHERE (%(before)s::bigint IS NULL OR id < %(before)s)"
            " AND (%(actor)s::text IS NULL OR actor_name = %(actor)s)"
            " AND (%(error)s::text IS NULL OR error_type ILIKE %(pattern)s OR error ILIKE %(pattern)s)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {
                "before": before_id,
                "actor": actor,
                "error": error,
                "pattern": "%" + _escape_like(error or "") + "%",
                "limit": max(0, limit),
            },
        )
        return [_json_safe(row) for row in cur.fetchall()]


def get_dead_letter(conn: psycopg.Connection, dl_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = %s", (dl_id,))
        row = cur.fetchone()
    return _json_safe(row) if row else None


def dead_letter_counts(conn: psycopg.Connection) -> dict[str, Any]:
    """How many dead letters, per actor and per reason: what the public routes may show."""
    rows = conn.execute("SELECT actor_name, reason, count(*) FROM dead_letters GROUP BY 1, 2").fetchall()
    by_actor: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for actor, reason, count in rows:
        by_actor[actor] = by_actor.get(actor, 0) + count
        by_reason[reason] = by_reason.get(reason, 0) + count
    return {"total": sum(by_actor.values()), "by_actor": by_actor, "by_reason": by_reason}


def broker_dead_letter_count(broker_redis: redis.Redis, queue_name: str, namespace: str = "dramatiq") -> int:
    """How many messages the Redis broker itself holds dead-lettered for `queue_name` (its XQ).

    (On RabbitMQ: `RabbitmqBroker.get_queue_message_counts(queue_name)[2]`, see ledger.coordination.inflight.)"""
    r: Any = broker_redis
    return int(r.zcard(f"{namespace}:{queue_name}.XQ"))


def adopt_broker_dead_letters(
    conn: psycopg.Connection,
    broker_redis: redis.Redis,
    queue_name: str,
    namespace: str = "dramatiq",
    secrets: Iterable[str] = (),
) -> int:
    """Record the broker's dead-lettered messages that have no row yet; return how many.

    A worker that could not reach PostgreSQL when a message died left it only in the broker's XQ.
    Its error is then unknown beyond the traceback Dramatiq kept of an earlier attempt.
    """
    r: Any = broker_redis
    xq = f"{namespace}:{queue_name}.XQ"
    redis_ids = [_text(i) for i in r.zrange(xq, 0, -1)]
    if not redis_ids:
        return 0
    known = {
        row[0]
        for row in conn.execute(
            "SELECT redis_message_id FROM dead_letters WHERE redis_message_id = ANY(%s)", (redis_ids,)
        )
    }
    missing = [i for i in redis_ids if i not in known]
    if not missing:
        return 0
    adopted = 0
    raw_messages = r.hmget(xq + ".msgs", missing)
    for redis_id, raw in zip(missing, raw_messages, strict=True):
        if raw is None:
            continue
        try:
            message = dramatiq.Message.decode(raw)
        except dramatiq.DecodeError:
            continue  # not a message anyone could requeue; Dramatiq drops it after its TTL
        retries = int(message.options.get("retries", 0))
        record_dead_letter(
            conn,
            message_id=message.message_id,
            queue_name=queue_name,
            actor_name=message.actor_name,
            args=list(message.args),
            kwargs=message.kwargs,
            reason=UNRECORDED,
            error_type="unknown",
            error="found in the broker's dead-letter set; the worker could not record the final error",
            traceback=message.options.get("traceback"),
            attempts=retries,
            retries=retries,
            redis_message_id=redis_id,
            secrets=secrets,
        )
        adopted += 1
    if not conn.autocommit:
        conn.commit()
    return adopted


def requeue_dead_letter(conn: psycopg.Connection, broker: dramatiq.Broker, dl_id: int) -> str | None:
    """Send a dead letter's message again, drop the broker's XQ copy and the row, and commit.

    Returns the message id enqueued, or None if there is no such row. Retries start from zero.
    On RabbitMQ the broker's copy stays in the `<queue>.XQ` queue until RabbitMQ expires it
    (Dramatiq's dead-message TTL, 7 days): AMQP cannot remove one message from the middle of a
    queue. The row, the source of truth here, is gone either way.
    """
    # The row is deleted in a transaction that commits only after the enqueue: a crash or a failed
    # enqueue rolls the delete back (a duplicate at worst, never a loss), and if the new attempt
    # dies before the commit, its record waits on this row's lock and then becomes a new row.
    with conn.transaction():
        row = conn.execute(
            "DELETE FROM dead_letters WHERE id = %s RETURNING queue_name, actor_name, args, kwargs, message_id,"
            " redis_message_id",
            (dl_id,),
        ).fetchone()
        if row is None:
            return None
        queue_name, actor_name, args, kwargs, message_id, redis_message_id = row
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            options={},  # no retries, no traceback: a fresh start
            message_id=message_id,  # the same id, so logs tie the new attempts to the old ones
        )
        broker.enqueue(message)
        if redis_message_id and isinstance(broker, RedisBroker):
            _drop_xq_copies(broker.client, broker.namespace, [(queue_name, redis_message_id)])
    if not conn.autocommit:
        conn.commit()
    return message.message_id


def requeue_dead_letters(
    conn: psycopg.Connection, broker: dramatiq.Broker, *, actor: str | None = None, limit: int | None = None
) -> list[str]:
    """Requeue every dead letter (of `actor`, oldest first, at most `limit`); return the message ids."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM dead_letters WHERE %(actor)s::text IS NULL OR actor_name = %(actor)s"
            " ORDER BY id LIMIT %(limit)s",
            {"actor": actor, "limit": limit},
        )
    ]
    sent = []
    for dl_id in ids:
        message_id = requeue_dead_letter(conn, broker, dl_id)
        if message_id is not None:
            sent.append(message_id)
    return sent


def purge_dead_letters(
    conn: psycopg.Connection,
    broker_redis: redis.Redis,
    *,
    dl_id: int | None = None,
    actor: str | None = None,
    namespace: str = "dramatiq",
) -> int:
    """Delete dead letters for good (one, one actor's, or all) with their broker copies; return how many."""
    rows = conn.execute(
        "DELETE FROM dead_letters WHERE (%(id)s::bigint IS NULL OR id = %(id)s)"
        " AND (%(actor)s::text IS NULL OR actor_name = %(actor)s) RETURNING queue_name, redis_message_id",
        {"id": dl_id, "actor": actor},
    ).fetchall()
    _drop_xq_copies(broker_redis, namespace, [(q, r) for q, r in rows if r])
    if not conn.autocommit:
        conn.commit()
    return len(rows)


def _drop_xq_copies(client: redis.Redis, namespace: str, entries: Sequence[tuple[str, str]]) -> None:
    if not entries:
        return
    pipe = client.pipeline(transaction=False)
    for queue_name, redis_id in entries:
        xq = f"{namespace}:{queue_name}.XQ"
        pipe.zrem(xq, redis_id)
        pipe.hdel(xq + ".msgs", redis_id)
    pipe.execute()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["failed_at"] = row["failed_at"].isoformat()
    return out
