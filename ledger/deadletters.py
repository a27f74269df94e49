"""Dead letters: worker messages that failed for good, as recorded in PostgreSQL and held by the broker.

The worker's middleware writes one `dead_letters` row per final failure (with the final exception,
which the broker's XQ copy lacks); the web app lists, shows and requeues them from here. Requeueing
enqueues first and deletes second: a crash in between gives a duplicate, which persistence ignores,
never a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
import psycopg
import redis
from dramatiq.brokers.redis import RedisBroker
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

_COLUMNS = "id, message_id, queue_name, actor_name, args, error_type, error, retries, failed_at, redis_message_id"


def record_dead_letter(
    conn: psycopg.Connection,
    *,
    message_id: str,
    queue_name: str,
    actor_name: str,
    args: Sequence[Any],
    error_type: str,
    error: str,
    retries: int,
    redis_message_id: str | None = None,
) -> int:
    """Insert one dead letter (the caller commits); return its id."""
    row = conn.execute(
        "INSERT INTO dead_letters (message_id, queue_name, actor_name, args, error_type, error, retries,"
        " redis_message_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (message_id, queue_name, actor_name, Jsonb(list(args)), error_type, error, retries, redis_message_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def list_dead_letters(
    conn: psycopg.Connection, *, limit: int = 50, before_id: int | None = None
) -> list[dict[str, Any]]:
    """Newest first; pass the last id of a page as `before_id` for the next one (keyset paging)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE %(before)s::bigint IS NULL OR id < %(before)s"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"before": before_id, "limit": max(0, limit)},
        )
        return [_json_safe(row) for row in cur.fetchall()]


def get_dead_letter(conn: psycopg.Connection, dl_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = %s", (dl_id,))
        row = cur.fetchone()
    return _json_safe(row) if row else None


def broker_dead_letter_count(broker_redis: redis.Redis, queue_name: str, namespace: str = "dramatiq") -> int:
    """How many messages the Redis broker itself holds dead-lettered for `queue_name` (its XQ).

    (On RabbitMQ: `RabbitmqBroker.get_queue_message_counts(queue_name)[2]`.)"""
    return int(broker_redis.zcard(f"{namespace}:{queue_name}.XQ"))


def requeue_dead_letter(conn: psycopg.Connection, broker: dramatiq.Broker, dl_id: int) -> str | None:
    """Send a dead letter's message again, drop the broker's XQ copy and the row, and commit.

    Returns the message id enqueued, or None if there is no such row. Retries start from zero.
    On RabbitMQ the broker's copy stays in the `<queue>.XQ` queue until RabbitMQ expires it
    (Dramatiq's dead-message TTL, 7 days): AMQP cannot remove one message from the middle of a
    queue. The row, the source of truth here, is gone either way.
    """
    row = get_dead_letter(conn, dl_id)
    if row is None:
        return None
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=row["queue_name"],
        actor_name=row["actor_name"],
        args=tuple(row["args"]),
        kwargs={},
        options={},
        message_id=row["message_id"],  # the same id, so logs tie the new attempts to the old ones
    )
    broker.enqueue(message)
    if row["redis_message_id"] and isinstance(broker, RedisBroker):
        xq = f"{broker.namespace}:{row['queue_name']}.XQ"
        pipe = broker.client.pipeline()
        pipe.zrem(xq, row["redis_message_id"])
        pipe.hdel(xq + ".msgs", row["redis_message_id"])
        pipe.execute()
    conn.execute("DELETE FROM dead_letters WHERE id = %s", (dl_id,))
    conn.commit()
    return message.message_id


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["failed_at"] = row["failed_at"].isoformat()
    return out
