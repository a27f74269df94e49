"""The event relay: numbers committed events and hands them to the webhook deliveries.

Every worker process runs one (`Relay`, a thread), and a PostgreSQL advisory lock lets one pass
run at a time across all of them, so it needs no leader and survives any process dying. A pass:

0. moves the chain-time clock (ledger/store/clock.py): locks ended, lots matured;
1. numbers the events committed since the last pass (`ledger.store.events.sequence`);
2. per enabled subscription, enqueues a delivery message for each matching event after its place
   (`after_seq`), then records the deliveries and moves the place, in one transaction that commits
   after the enqueues: a crash in between sends them again (a duplicate, which the actor skips
   once delivered), never loses one;
3. sends again the deliveries whose message is overdue (`due_at` passed: the broker lost it, or the
   subscription was off while it came), a few at a time;
4. notes a stalled listener as a `listener.stalled` event (once per stall).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import dramatiq
import psycopg
from psycopg_pool import ConnectionPool

from ledger.clocks import Clock
from ledger.config import Settings
from ledger.coordination.queue import webhook_message
from ledger.store.clock import advance
from ledger.store.events import LISTENER_STALLED, last_seq, record_event, sequence

log = logging.getLogger(__name__)

_LOCK_RELAY = 0x4C52454C  # "LREL": one relay pass at a time, over every process
FAN_OUT_BATCH = 2_000  # events per subscription per pass
RESEND_BATCH = 500  # overdue deliveries sent again per pass


@dataclass
class RelayPass:
    sequenced: int = 0
    enqueued: int = 0
    resent: int = 0
    stalled: bool = False
    ran: bool = False
    clock_events: int = 0
    per_subscription: dict[int, int] = field(default_factory=dict)


def relay_once(
    conn: psycopg.Connection, broker: dramatiq.Broker, settings: Settings, *, due_seconds: float
) -> RelayPass:
    """One pass (see the module doc) on an autocommit connection; `ran` False if another process
    holds the pass. `due_seconds`: how long a fresh delivery message may take before it is overdue."""
    result = RelayPass()
    locked = conn.execute("SELECT pg_try_advisory_lock(%s::int, 0)", (_LOCK_RELAY,)).fetchone()
    if not (locked and locked[0]):
        return result
    try:
        result.ran = True
        clock = advance(conn)
        result.clock_events = clock["lock_ended"] + clock["withdrawable"]
        while True:
            numbered = sequence(conn)
            result.sequenced += numbered
            if numbered == 0:
                break
        _fan_out(conn, broker, settings.queue_name, due_seconds, result)
        result.resent = _resend_overdue(conn, broker, settings.queue_name, due_seconds)
        result.stalled = note_stalled_listener(conn, settings)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s::int, 0)", (_LOCK_RELAY,))
    return result


def _fan_out(conn: psycopg.Connection, broker: dramatiq.Broker, queue: str, due: float, result: RelayPass) -> None:
    top = last_seq(conn)
    subs = conn.execute(
        "SELECT id, after_seq, types, accounts FROM webhook_subscriptions WHERE enabled AND after_seq < %s ORDER BY id",
        (top,),
    ).fetchall()
    for sub_id, after, types, accounts in subs:
        seqs = [
            int(seq)
            for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE seq > %(after)s AND seq <= %(top)s"
                " AND (cardinality(%(types)s::text[]) = 0 OR type = ANY(%(types)s::text[]))"
                " AND (cardinality(%(accounts)s::text[]) = 0 OR account = ANY(%(accounts)s::text[]))"
                " ORDER BY seq LIMIT %(limit)s",
                {"after": after, "top": top, "types": types, "accounts": accounts, "limit": FAN_OUT_BATCH},
            ).fetchall()
        ]
        upto = seqs[-1] if len(seqs) == FAN_OUT_BATCH else top
        for seq in seqs:
            broker.enqueue(webhook_message(sub_id, seq, queue))
        with conn.transaction():
            if seqs:
                conn.execute(
                    "INSERT INTO webhook_deliveries (subscription_id, event_seq, due_at)"
                    " SELECT %s, s, now() + make_interval(secs => %s) FROM unnest(%s::bigint[]) AS s"
                    " ON CONFLICT DO NOTHING",
                    (sub_id, due, seqs),
                )
            conn.execute(
                "UPDATE webhook_subscriptions SET after_seq = greatest(after_seq, %s) WHERE id = %s", (upto, sub_id)
            )
        result.enqueued += len(seqs)
        result.per_subscription[sub_id] = len(seqs)


def _resend_overdue(conn: psycopg.Connection, broker: dramatiq.Broker, queue: str, due: float) -> int:
    rows = conn.execute(
        "SELECT d.subscription_id, d.event_seq FROM webhook_deliveries d"
        " JOIN webhook_subscriptions s ON s.id = d.subscription_id AND s.enabled"
        " WHERE d.status = 'pending' AND d.due_at < now() ORDER BY d.due_at LIMIT %s",
        (RESEND_BATCH,),
    ).fetchall()
    for sub_id, seq in rows:
        broker.enqueue(webhook_message(int(sub_id), int(seq), queue))
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE webhook_deliveries SET due_at = now() + make_interval(secs => %s)"
                " WHERE subscription_id = %s AND event_seq = %s AND status = 'pending'",
                [(due, sub_id, seq) for sub_id, seq in rows],
            )
        log.warning("webhooks: %d overdue delivery message(s) sent again", len(rows))
    return len(rows)


def note_stalled_listener(conn: psycopg.Connection, settings: Settings) -> bool:
    """Write `listener.stalled` once per stall: no active listener has beaten for
    LISTENER_STALE_SECONDS (web/monitor.py calls that "stale"). True if written now."""
    row = conn.execute(
        "SELECT holder, beat_at, processed_block, processed_time, head_block,"
        " extract(epoch FROM now() - beat_at) FROM listener_heartbeats WHERE role = 'active'"
        " ORDER BY beat_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return False
    holder, beat_at, processed_block, processed_time, head_block, age = row
    if float(age) < settings.listener_stale_seconds:
        return False
    with conn.transaction():
        return record_event(
            conn,
            LISTENER_STALLED,
            None,
            {
                "holder": holder,
                "last_beat_at": beat_at.isoformat().replace("+00:00", "Z"),
                "silent_seconds": round(float(age), 1),
                "processed_block": processed_block,
                "head_block": head_block,
            },
            block_num=processed_block,
            block_time=processed_time,
            once_key=f"listener.stalled:{holder}:{beat_at.isoformat()}",
        )


class Relay:
    """`relay_once` every `interval` seconds on a thread of its own; errors are logged and retried."""

    def __init__(
        self,
        pool: ConnectionPool,
        broker: dramatiq.Broker,
        settings: Settings,
        *,
        interval: float,
        due_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.settings = settings
        self.interval = interval
        self.due_seconds = due_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-relay", daemon=True)
        self._failing = False

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.pool.connection() as conn:
                    relay_once(conn, self.broker, self.settings, due_seconds=self.due_seconds)
            except Exception as exc:  # noqa: BLE001 - the next pass tries again; a dead relay would stop every webhook
                if not self._failing:
                    log.warning("event relay pass failed (retrying every %.2fs): %s", self.interval, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("event relay passes again")
                self._failing = False
