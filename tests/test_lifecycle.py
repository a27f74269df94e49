"""The lifecycle job (workers/lifecycle.py) on the worker's real SQL, inside a rolled-back transaction."""

from __future__ import annotations

import psycopg

from ledger.store.deadletters import record_dead_letter
from tests.test_persist import DELAY, make_op
from workers.lifecycle import run_lifecycle
from workers.persist import confirm_blocks, persist_operation


class SolidAt:
    """The node, as far as the lifecycle job asks it (the solidified head)."""

    def __init__(self, block: int) -> None:
        self.block = block

    def solid_block_number(self) -> int:
        return self.block


def _statuses(conn: psycopg.Connection, table: str) -> dict[int, str]:
    return {int(b): s for b, s in conn.execute(f"SELECT block_num, status FROM {table} ORDER BY block_num").fetchall()}


def test_a_dead_lettered_revert_ends_orphaned_and_stragglers_are_confirmed(db: psycopg.Connection) -> None:
    # Given records of block 100, which left the chain: the listener noted the block, but its
    # revert_blocks message was dead-lettered (retries exhausted while PostgreSQL was away)
    gone = make_op("freeze", 100)
    persist_operation(db, gone, unfreeze_delay_seconds=DELAY)
    persist_operation(db, make_op("delegate", 100, tx_index=1), unfreeze_delay_seconds=DELAY)
    db.execute("INSERT INTO orphaned_blocks (block_num, block_id) VALUES (%s, %s)", (100, gone.block_id))
    record_dead_letter(
        db,
        message_id="m-1",
        queue_name="ledger",
        actor_name="revert_blocks",
        args=[[[100, gone.block_id]]],
        error_type="OperationalError",
        error="connection refused",
        retries=10,
    )
    # and a record of block 101 whose confirm_blocks was lost
    persist_operation(db, make_op("freeze", 101), unfreeze_delay_seconds=DELAY)
    confirm_blocks(db, 90)  # an older confirmation that did arrive changes nothing here
    assert set(_statuses(db, "stake_records").values()) == {"pending"}

    # When the lifecycle job runs, the node's solidified head being 150
    counts, touched = run_lifecycle(db, node=SolidAt(150))  # type: ignore[arg-type]

    # Then the records of the block that left the chain are orphaned, the straggler is confirmed
    assert _statuses(db, "stake_records") == {100: "orphaned", 101: "confirmed"}
    assert _statuses(db, "delegate_records") == {100: "orphaned"}
    assert counts["orphaned_blocks"] == 1 and counts["confirmed"] == 1
    assert gone.owner_address in touched
    # And a second run finds nothing left to do (idempotent)
    again, _ = run_lifecycle(db, node=SolidAt(150))  # type: ignore[arg-type]
    assert again == {"confirmed": 0, "orphaned_blocks": 0, "withdrawable": 0}


def test_matured_lots_turn_withdrawable(db: psycopg.Connection) -> None:
    # An unfreeze in an old block: its lot's unstake delay has long passed.
    persist_operation(db, make_op("unfreeze", 10), unfreeze_delay_seconds=DELAY)
    persist_operation(db, make_op("unfreeze", 11), unfreeze_delay_seconds=10**9)  # not yet
    counts, touched = run_lifecycle(db, node=None)
    assert counts["withdrawable"] == 1
    assert _statuses(db, "unfreeze_records") == {10: "withdrawable", 11: "pending"}
    assert touched == {make_op("unfreeze", 10).owner_address}
