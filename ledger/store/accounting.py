"""End-to-end accounting: "every operation of every block up to the checkpoint is in PostgreSQL"
as a checked fact, not a hope about the broker.

- The listener records, in the very transaction that advances its checkpoint, each operation its
  new blocks must produce, with the message it just enqueued (`record_expected`).
- Workers do nothing special: an operation has landed once its row holds that very block id (a
  transaction re-included after a fork counts only in its new block).
- `repair` drops what has landed, moves the *persisted watermark* (`persisted_block` beside the
  checkpoint: every block at or below it complete), and enqueues again what stays missing past the
  grace period. Idempotent upserts make a repeat harmless. The active listener runs it every few
  seconds; it is safe to call from anywhere (the fault suite, an operator), since it only reads
  state, re-sends messages, and writes the watermark under the checkpoint row's lock.
- A missing operation may simply be waiting in a long queue (a catch-up runs ahead of the
  workers), so while the broker still holds ready messages only operations older than
  `BACKLOG_PATIENCE` grace periods are re-sent: a backlog is never doubled by its own repair.
- Unless the broker lost its messages (`Sink.lost`: a mark kept in the broker is gone, or the
  Redis server restarted): then every operation in flight that the broker no longer holds is
  re-sent at once, with the confirmation and reverts, without waiting for grace or backlog
  (ledger/coordination/queue.py says how a loss is told).
- Each row carries the lease term that recorded it. After a takeover, the rows of earlier terms
  are re-sent on the next pass whatever their age or the backlog, under the current term: their
  messages carry a term that is over, and workers drop those (ledger/coordination/lease.py).
- Forks: the blocks that left the chain leave the accounting with the checkpoint (`forget_after`,
  in `PgStore.rollback`). Two single messages can be lost as well: a `revert_blocks` (rows of an
  orphaned block still pending or failed) and a `confirm_blocks` (rows pending at or below the
  solidified block); both are sent again once overdue (`resend_lost_blocks`: the one place that
  does, for this pass and for the lifecycle job, workers/lifecycle.py).

What this cannot see: operations of blocks the listener never recorded (before migration 005)
and backfill runs (resumable by hand; docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import psycopg

from ledger.coordination.backoff import backoff
from ledger.coordination.lease import current_fence
from ledger.coordination.queue import Sink
from ledger.domain import Operation

log = logging.getLogger(__name__)

MAIN_CHECKPOINT = "main"  # the name of the listener's checkpoint row (and of its lease)
BACKLOG_PATIENCE = 10  # grace periods an operation may wait behind a backlog before it is re-sent
RESEND_LIMIT = 5_000  # operations re-sent per pass (the next pass takes the rest)
MAX_BACKOFF_DOUBLINGS = 5  # a repeat waits grace * 2**n, n <= this (30 s grace: at most 16 min)


@dataclass(frozen=True)
class Repair:
    """One pass: where the two heads are and what was done."""

    checkpoint: int | None
    persisted: int | None  # the watermark after this pass
    landed: int  # recorded operations found persisted (and forgotten)
    missing: int  # recorded operations not persisted yet
    resent: int  # operations enqueued again
    deferred: int  # overdue, but left for later: the broker still had a backlog
    reconfirmed: int | None  # solid block whose confirmation was sent again
    reverted: int  # orphaned blocks whose revert was sent again
    broker_loss: str | None = None  # why the broker was found to have lost messages, if it was


@dataclass(frozen=True)
class Heads:
    """The chain head, the listener's checkpoint and the persisted watermark, as last recorded."""

    head: int
    solid: int
    checkpoint: int | None
    persisted: int | None
    persisted_at: str | None  # when the watermark was last computed (ISO 8601)
    in_flight: int  # operations recorded at the checkpoint not seen persisted at the last pass

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        cp, pw = self.checkpoint, self.persisted
        # "lag" the way a user means it: blocks whose records are not all in the ledger yet.
        out["lag_blocks"] = {
            "listener": None if cp is None else max(0, self.head - cp),  # chain read, not yet enqueued
            "workers": None if cp is None or pw is None else max(0, cp - pw),  # enqueued, not yet persisted
            "total": None if pw is None else max(0, self.head - pw),
        }
        return out


def record_expected(conn: psycopg.Connection, operations: Iterable[Operation], term: int | None = None) -> None:
    """Record what the blocks just enqueued (under lease `term`) must produce; call in the
    checkpoint's transaction."""
    # Keyed, so a node that lists a transaction twice cannot make the statement touch a row twice
    # (an error that would stop the checkpoint for good).
    unique = {(op.tx_id, op.op_index, op.block_id): op for op in operations}
    payloads = [op.to_message() for op in unique.values()]
    if not payloads:
        return
    # One statement over one JSON document: a catch-up batch holds hundreds of operations and this
    # runs in the checkpoint's transaction (row by row, or as typed arrays, cost 3x as much).
    # A batch enqueued again (a listener restarted before its checkpoint) restarts the clock.
    conn.execute(
        "INSERT INTO expected_operations (tx_id, op_index, block_id, block_num, payload, term)"
        " SELECT p->>'tx_id', (p->>'op_index')::smallint, p->>'block_id', (p->>'block_num')::bigint, p, %s"
        " FROM jsonb_array_elements(%s::jsonb) AS p"
        " ON CONFLICT (tx_id, op_index, block_id) DO UPDATE SET payload = EXCLUDED.payload,"
        " recorded_at = now(), due_at = NULL, term = EXCLUDED.term",
        (term, orjson.dumps(payloads).decode()),
    )


def forget_after(conn: psycopg.Connection, name: str, ancestor: int) -> None:
    """A fork rolled the checkpoint back to `ancestor`: blocks above it leave the accounting."""
    conn.execute("DELETE FROM expected_operations WHERE block_num > %s", (ancestor,))
    conn.execute(
        "UPDATE listener_checkpoint SET persisted_block = least(persisted_block, %s) WHERE name = %s",
        (ancestor, name),
    )


def repair(conn: psycopg.Connection, sink: Sink, *, grace_seconds: float, name: str = MAIN_CHECKPOINT) -> Repair:
    """One accounting pass (see the module doc); `conn` must be in autocommit mode."""
    grace = {"grace": float(grace_seconds), "patience": float(grace_seconds) * BACKLOG_PATIENCE}
    # Asked before the transaction: it may read the broker's whole queue, which must not hold
    # the checkpoint row.
    loss = sink.lost()
    with conn.transaction():
        # Locks the checkpoint row: a concurrent save waits, so the watermark never passes it.
        row = conn.execute("SELECT block_num FROM listener_checkpoint WHERE name = %s FOR UPDATE", (name,)).fetchone()
        if row is None:
            return Repair(None, None, 0, 0, 0, 0, None, 0)
        checkpoint = int(row[0])
        # An OLTP pass under the checkpoint row's lock: PostgreSQL's JIT compiles for hundreds of
        # ms whenever an estimate crosses jit_above_cost (it did, on stale statistics of this
        # churning table), which held the listener's next checkpoint that long.
        conn.execute("SET LOCAL jit = off")
        landed = sum(conn.execute(statement).rowcount for statement in _LANDED)
        first, missing = conn.execute(
            "SELECT min(block_num), count(*) FROM expected_operations WHERE block_num <= %s", (checkpoint,)
        ).fetchone() or (None, 0)
        persisted = checkpoint if first is None else min(checkpoint, int(first) - 1)
        conn.execute(
            "UPDATE listener_checkpoint SET persisted_block = %s, persisted_at = now() WHERE name = %s",
            (persisted, name),
        )
        fence = current_fence(conn, name)
        term = None if fence is None else fence.term
        overdue = conn.execute(_OVERDUE, {**grace, "limit": RESEND_LIMIT, "term": term}).fetchall()
        in_flight = conn.execute(_IN_FLIGHT, {"term": term}).fetchall() if loss is not None else []
    # Enqueue outside the transaction (a slow broker must not hold the checkpoint row), then
    # push the next attempt back: a crash in between only re-sends again, which is harmless.
    if loss is not None:
        # A message of an earlier term is no copy: workers drop it.
        gone = [r for r in in_flight if r[4] or loss.held is None or (r[0], r[1], r[2]) not in loss.held]
        _resend(conn, sink, gone, grace_seconds, term)
        # The confirmation and reverts it held are re-sent too: nothing in it can be waited for.
        reconfirmed, reverted = resend_lost_blocks(conn, sink, grace_seconds=0, backlog=0)
        sink.mark_kept(loss)  # after the re-sends: a failure before here finds the loss again
        log.log(
            logging.WARNING if gone or reconfirmed is not None or reverted else logging.INFO,
            "repair: the broker may have lost queued messages (%s): %d of %d operation(s) in flight"
            " were not in it and were re-sent at once, confirmation re-sent: %s, reverts re-sent: %d block(s)",
            loss.reason,
            len(gone),
            len(in_flight),
            reconfirmed if reconfirmed is not None else "no",
            reverted,
        )
        # The rest of the overdue ones are still in the broker: the next pass sees to them.
        return Repair(
            checkpoint, persisted, landed, int(missing), len(gone), 0, reconfirmed, reverted, broker_loss=loss.reason
        )
    backlog = sink.backlog() if overdue else None
    due = [r for r in overdue if backlog == 0 or r[4]]
    _resend(conn, sink, due, grace_seconds, term)
    reconfirmed, reverted = resend_lost_blocks(conn, sink, grace_seconds=grace_seconds, backlog=backlog)
    result = Repair(
        checkpoint, persisted, landed, int(missing), len(due), len(overdue) - len(due), reconfirmed, reverted
    )
    if due or reconfirmed is not None or reverted:
        log.warning(
            "repair: %d operation(s) not persisted %.0fs after their checkpoint, or recorded by an earlier term,"
            " were enqueued again"
            " (first block %s), confirmation re-sent: %s, reverts re-sent: %d block(s); watermark %s / checkpoint %s",
            len(due),
            grace_seconds,
            due[0][5] if due else "-",
            reconfirmed if reconfirmed is not None else "no",
            reverted,
            persisted,
            checkpoint,
        )
    return result


def _resend(conn: psycopg.Connection, sink: Sink, rows: list[Any], grace_seconds: float, term: int | None) -> None:
    """Enqueue recorded operations again (rows as `_OVERDUE`'s: tx_id, op_index, block_id, payload,
    ..., repairs at 6), now under lease `term`, and push their next attempt back by the grace period,
    doubled with each repeat."""
    if rows:
        sink.publish(Operation.from_message(r[3]) for r in rows)
        with conn.cursor() as cur:
            cap = grace_seconds * 2**MAX_BACKOFF_DOUBLINGS
            waits = [backoff(r[6] + 1, base=grace_seconds, cap=cap) for r in rows]
            cur.executemany(_BACK_OFF, [(wait, term, r[0], r[1], r[2]) for wait, r in zip(waits, rows, strict=True)])


def resend_lost_blocks(
    conn: psycopg.Connection, sink: Sink, *, grace_seconds: float, solid_block: int = -1, backlog: int | None = None
) -> tuple[int | None, int]:
    """Send again the confirm_blocks and revert_blocks whose work is still undone a grace period on:
    rows pending at or below the solidified head (the higher of the listener's last note and
    `solid_block`) get one confirmation of that head; every block that left the chain and still
    holds pending or failed rows gets its revert. Nothing goes while the broker holds a backlog
    (`backlog`, else asked): the message may be in it. Returns (the head re-confirmed, or None;
    how many blocks' reverts were sent)."""
    params = {"grace": float(grace_seconds), "solid": solid_block}
    stale = conn.execute(_STALE_CONFIRMATION, params).fetchone()
    blocks = [(int(num), str(block_id)) for num, block_id in conn.execute(_STALE_REVERTS, params).fetchall()]
    if stale is None and not blocks:
        return None, 0
    if (sink.backlog() if backlog is None else backlog) > 0:
        return None, 0
    reconfirmed = None
    if stale is not None:
        reconfirmed = int(stale[0])
        sink.confirm(reconfirmed)
    if blocks:
        sink.revert(blocks)
    return reconfirmed, len(blocks)


def checkpoint_block(conn: psycopg.Connection, name: str = MAIN_CHECKPOINT) -> int | None:
    """The block the checkpoint stands at (the listener has sent everything up to it); None before its first."""
    row = conn.execute("SELECT block_num FROM listener_checkpoint WHERE name = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def read_heads(conn: psycopg.Connection, name: str = MAIN_CHECKPOINT) -> Heads:
    row = conn.execute(
        "SELECT s.head_block, s.solid_block, c.block_num, c.persisted_block, c.persisted_at,"
        " (SELECT count(*) FROM expected_operations)"
        " FROM chain_state s LEFT JOIN listener_checkpoint c ON c.name = %s",
        (name,),
    ).fetchone()
    if row is None:  # chain_state has its one row from migration 001 on
        return Heads(0, 0, None, None, None, 0)
    head, solid, checkpoint, persisted, persisted_at, in_flight = row
    return Heads(
        head=int(head),
        solid=int(solid),
        checkpoint=checkpoint,
        persisted=persisted,
        persisted_at=persisted_at.isoformat() if persisted_at is not None else None,
        in_flight=int(in_flight),
    )


# An operation has landed when its row is on the block it was recorded for (whatever its status:
# pending, confirmed, failed, or orphaned by a later fork of that block). One statement per table,
# as joins: `EXISTS (...) OR EXISTS (...)` cannot be a semi-join, so PostgreSQL hashed the WHOLE of
# both record tables on every pass (and JIT-compiled that plan): 0.9 s a pass with 19k records,
# growing with the ledger. As a join the planner can look the rows in flight up in the records'
# (tx_id, op_index) index instead; a row is deleted once either way.
_LANDED = (
    """
DELETE FROM expected_operations e USING stake_records s
WHERE s.tx_id = e.tx_id AND s.op_index = e.op_index AND s.block_id = e.block_id
""",
    """
DELETE FROM expected_operations e USING delegate_records d
WHERE d.tx_id = e.tx_id AND d.op_index = e.op_index AND d.block_id = e.block_id
""",
)

# (tx_id, op_index, block_id, payload, past patience, block_num, repairs), oldest blocks first. An
# operation recorded by an earlier term is due at once, backlog or not: its message, wherever it is,
# carries a term that is over, and workers drop it (ledger/coordination/lease.py).
_OVERDUE = """
SELECT tx_id, op_index, block_id, payload,
       recorded_at + make_interval(secs => %(patience)s) <= now() OR term < %(term)s, block_num, repairs
FROM expected_operations
WHERE coalesce(due_at, recorded_at + make_interval(secs => %(grace)s)) <= now() OR term < %(term)s
ORDER BY block_num
LIMIT %(limit)s
"""

# Every recorded operation not landed: after a broker loss, those it no longer holds are re-sent,
# and those an earlier term recorded (column 4, where `_OVERDUE` has "past patience").
_IN_FLIGHT = """
SELECT tx_id, op_index, block_id, payload, coalesce(term < %(term)s, false), block_num, repairs
FROM expected_operations ORDER BY block_num
"""

_BACK_OFF = """
UPDATE expected_operations
SET repairs = repairs + 1, due_at = now() + make_interval(secs => %s), term = coalesce(%s, term)
WHERE tx_id = %s AND op_index = %s AND block_id = %s
"""

# A row still pending at or below the solidified head a grace period after it was written: the
# confirm_blocks message that should have confirmed it was lost (rows of orphaned blocks are the
# revert's business).
_STALE_CONFIRMATION = """
SELECT c.solid_block FROM (SELECT greatest(solid_block, %(solid)s) AS solid_block FROM chain_state WHERE id = 1) c
WHERE EXISTS (SELECT 1 FROM stake_records s
              WHERE s.status = 'pending' AND s.block_num <= c.solid_block
                AND s.updated_at <= now() - make_interval(secs => %(grace)s)
                AND NOT EXISTS (SELECT 1 FROM orphaned_blocks o WHERE o.block_id = s.block_id))
   OR EXISTS (SELECT 1 FROM delegate_records d
              WHERE d.status = 'pending' AND d.block_num <= c.solid_block
                AND d.updated_at <= now() - make_interval(secs => %(grace)s)
                AND NOT EXISTS (SELECT 1 FROM orphaned_blocks o WHERE o.block_id = d.block_id))
"""

# A row still pending or failed on a block shown to have left the chain: its revert_blocks was
# lost. (An orphaned block nobody has checked yet is reconciliation's: workers/canonical.py.)
_STALE_REVERTS = """
SELECT o.block_num, o.block_id FROM orphaned_blocks o
WHERE o.orphaned_at <= now() - make_interval(secs => %(grace)s) AND o.checked_at IS NOT NULL
  AND (EXISTS (SELECT 1 FROM stake_records s WHERE s.block_id = o.block_id AND s.status IN ('pending', 'failed'))
       OR EXISTS (SELECT 1 FROM delegate_records d
                  WHERE d.block_id = o.block_id AND d.status IN ('pending', 'failed')))
ORDER BY o.block_num
"""
