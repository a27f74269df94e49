"""The listener's PostgreSQL side: checkpoint, tracked accounts, skipped-data log, chain state; a
backfill's own checkpoint row (`BackfillStore`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import psycopg

from ledger.chain.parser import ParseIssue
from ledger.coordination.lease import CheckpointFenced, Fence, StaleTerm, check_fence
from ledger.coordination.queue import Sink
from ledger.domain import Operation
from ledger.store import accounting
from ledger.store.accounts import tracked_addresses
from ledger.store.clock import record_block_times

log = logging.getLogger(__name__)


class PgStore:
    """Reconnects on demand, so a PostgreSQL restart costs the listener one failed cycle."""

    def __init__(
        self, url: str, name: str = accounting.MAIN_CHECKPOINT, term: int = 0, session_options: str = ""
    ) -> None:
        self._url = url
        self.name = name
        self.term = term
        # ledger.coordination.lease.holder_session_options: a pause inside a transaction must not
        # hold the checkpoint row's lock for as long as it lasts.
        self._options = session_options
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5, options=self._options)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def load_checkpoint(self) -> tuple[int, str | None] | None:
        """(block number, block id) of the last processed block, or None before the first run."""
        row = (
            self._connection()
            .execute("SELECT block_num, block_id FROM listener_checkpoint WHERE name = %s", (self.name,))
            .fetchone()
        )
        return (row[0], row[1]) if row else None

    def save_checkpoint(
        self,
        block_num: int,
        block_id: str,
        head: int,
        solid: int,
        blocks: Sequence[tuple[int, str, str]] = (),
        operations: Sequence[Operation] = (),
        block_time_ms: int | None = None,
        block_times: Sequence[tuple[int, int]] = (),
    ) -> None:
        """Advance the checkpoint, remember the new blocks' ids and record the operations they must
        produce (ledger/store/accounting.py), all in one transaction; only the current term may (fencing).
        `block_times`: (block, timestamp ms) of the batch's blocks, the chain's clock (ledger/store/clock.py)."""
        conn = self._connection()
        with conn.transaction():
            self._move_checkpoint(conn, block_num, block_id, block_time_ms)
            accounting.record_expected(conn, operations, self.term)
            conn.execute(
                "UPDATE chain_state SET head_block = %s, solid_block = greatest(solid_block, %s), updated_at = now()",
                (head, solid),
            )
            if blocks:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO recent_blocks (block_num, block_id, parent_hash, term) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (block_num) DO UPDATE SET block_id = EXCLUDED.block_id,"
                        " parent_hash = EXCLUDED.parent_hash, term = EXCLUDED.term",
                        [(*block, self.term) for block in blocks],
                    )
            # Forks never reach below the solidified head; keep a margin for a lagging solidity node.
            conn.execute("DELETE FROM recent_blocks WHERE block_num < %s", (solid - 100,))
            record_block_times(conn, block_times)

    def note_solid(self, solid: int) -> None:
        """Record the solidified head the listener is about to confirm (only for the current term).
        A confirmation sent while no batch is saved (a quiet chain) exists otherwise only in its
        message: a broker that loses it would leave the accounting's re-send and the workers'
        inserts on an older solidified head, and the records between pending."""
        conn = self._connection()
        with conn.transaction():
            self._check_term(conn)
            conn.execute("UPDATE chain_state SET solid_block = greatest(solid_block, %s)", (solid,))

    def recent_block_id(self, block_num: int) -> str | None:
        row = (
            self._connection()
            .execute("SELECT block_id FROM recent_blocks WHERE block_num = %s", (block_num,))
            .fetchone()
        )
        return row[0] if row else None

    def rollback(
        self, ancestor: int, ancestor_id: str | None, off_chain: Sequence[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """Move the checkpoint back to `ancestor` after a fork and record as orphaned the blocks that
        left the chain; return them.

        `off_chain` are the blocks above the ancestor that the caller saw replaced (the node
        answered another block at their height). Only those of them this term's recent blocks still
        hold are orphaned, in the transaction whose fenced checkpoint move proves the term current:
        a block recorded by another term, or not shown to be replaced, is never orphaned. They are
        recorded here, before anything of the new branch is enqueued, so a worker stores any late
        record from them as orphaned whatever the message order.
        """
        conn = self._connection()
        with conn.transaction():
            self._move_checkpoint(conn, ancestor, ancestor_id)
            accounting.forget_after(conn, self.name, ancestor)
            deleted = conn.execute(
                "DELETE FROM recent_blocks WHERE block_num > %s RETURNING block_num, block_id", (ancestor,)
            ).fetchall()
            gone = sorted({(int(num), str(block_id)) for num, block_id in deleted} & set(off_chain))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO orphaned_blocks (block_num, block_id, term, checked_at) VALUES (%s, %s, %s, now())"
                    " ON CONFLICT (block_id) DO UPDATE SET term = EXCLUDED.term, checked_at = EXCLUDED.checked_at",
                    [(num, block_id, self.term) for num, block_id in gone],
                )
        return gone

    def repair(self, sink: Sink, grace_seconds: float) -> accounting.Repair:
        """One accounting pass (ledger.store.accounting.repair) for this checkpoint."""
        return accounting.repair(self._connection(), sink, grace_seconds=grace_seconds, name=self.name)

    def _move_checkpoint(
        self, conn: psycopg.Connection, block_num: int, block_id: str | None, block_time_ms: int | None = None
    ) -> None:
        move_checkpoint(conn, self.name, self.term, block_num, block_id, block_time_ms)

    def _check_term(self, conn: psycopg.Connection) -> None:
        """Inside the caller's transaction: CheckpointFenced unless this term still holds the lease."""
        try:
            check_fence(conn, Fence(self.name, self.term))
        except StaleTerm as exc:
            raise CheckpointFenced(str(exc)) from None

    def tracked(self) -> frozenset[str]:
        return tracked_addresses(self._connection())

    def record_issues(self, issues: Iterable[ParseIssue]) -> None:
        conn = self._connection()
        with conn.transaction():
            self._check_term(conn)
            for issue in issues:
                conn.execute(
                    "INSERT INTO ingest_errors (block_num, tx_id, message) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (issue.block_num, issue.tx_id, issue.message),
                )


def move_checkpoint(
    conn: psycopg.Connection,
    name: str,
    term: int,
    block_num: int,
    block_id: str | None,
    block_time_ms: int | None = None,
) -> None:
    """Set checkpoint `name`, only for the holder of `term` (fencing); CheckpointFenced otherwise.
    `block_time_ms` is the block's timestamp (the age of the data), NULL when not known."""
    cur = conn.execute(
        "INSERT INTO listener_checkpoint (name, block_num, block_id, term, block_time_ms) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET block_num = EXCLUDED.block_num,"
        " block_id = EXCLUDED.block_id, block_time_ms = EXCLUDED.block_time_ms, updated_at = now()"
        " WHERE listener_checkpoint.term = EXCLUDED.term",
        (name, block_num, block_id, term, block_time_ms),
    )
    if cur.rowcount != 1:
        raise CheckpointFenced(f"checkpoint {name!r} is held by another term than {term}")


class BackfillStore(PgStore):
    """The backfill's own checkpoint row (fenced by its term like the main one), plus record_issues."""

    def position(self) -> int | None:
        """The last block done, or None before the first batch."""
        row = (
            self._connection()
            .execute("SELECT block_num FROM listener_checkpoint WHERE name = %s", (self.name,))
            .fetchone()
        )
        return row[0] if row else None

    def advance(self, block_num: int, block_id: str) -> None:
        move_checkpoint(self._connection(), self.name, self.term, block_num, block_id)

    def advance_to(self, block_num: int, block_time_ms: int) -> None:
        """For a walk by time (listener.history): the block and its timestamp, no block id."""
        move_checkpoint(self._connection(), self.name, self.term, block_num, None, block_time_ms)
