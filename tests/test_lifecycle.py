"""The lifecycle job (workers/lifecycle.py) on the worker's real SQL, inside a rolled-back transaction,
and the rule it no longer applies by itself: when a lot is withdrawable (chain time, ledger/positions.py).

Inside the `db` fixture's transaction now() is fixed, so ages are set by moving timestamps back."""

from __future__ import annotations

import psycopg

from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.deadletters import record_dead_letter
from listener.store import move_checkpoint
from tests.test_accounting import FakeSink
from tests.test_persist import ALICE, DELAY, block_time_ms, make_op
from web.positions import read_summary
from web.queries import fetch_records
from workers.lifecycle import run_lifecycle
from workers.persist import confirm_blocks, persist_operations

GRACE = 30.0


class SolidAt:
    """The node, as far as the lifecycle job asks it: the solidified head, and the block at a height
    (another block than the records' at every height: theirs left the chain)."""

    def __init__(self, block: int) -> None:
        self.block = block

    def solid_block_number(self) -> int:
        return self.block

    def block_header(self, num: int) -> dict[str, str]:
        return {"blockID": f"{num:016x}" + "cd" * 24}


def _sent(counts: tuple[dict[str, int], set[str]]) -> dict[str, int]:
    return {key: counts[0][key] for key in ("confirmations", "reverts")}


def _statuses(conn: psycopg.Connection, table: str) -> dict[int, str]:
    return {int(b): s for b, s in conn.execute(f"SELECT block_num, status FROM {table} ORDER BY block_num").fetchall()}


def _age(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE stake_records SET updated_at = now() - interval '1 hour'")
    conn.execute("UPDATE delegate_records SET updated_at = now() - interval '1 hour'")
    conn.execute("UPDATE orphaned_blocks SET orphaned_at = now() - interval '1 hour'")


def test_a_dead_lettered_revert_and_a_lost_confirmation_are_sent_again(db: psycopg.Connection) -> None:
    # Given records of block 100, which left the chain: the listener noted the block, but its
    # revert_blocks message was dead-lettered (retries exhausted while PostgreSQL was away)
    gone = make_op("freeze", 100)
    persist_operations(db, [gone], unfreeze_delay_seconds=DELAY)
    persist_operations(db, [make_op("delegate", 100, tx_index=1)], unfreeze_delay_seconds=DELAY)
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
    persist_operations(db, [make_op("freeze", 101)], unfreeze_delay_seconds=DELAY)
    confirm_blocks(db, 90, unfreeze_delay_seconds=DELAY)  # an older confirmation that did arrive
    assert set(_statuses(db, "stake_records").values()) == {"pending"}

    # When the lifecycle job runs within the grace period, nothing is sent: the messages may be on their way
    sink = FakeSink()
    first = run_lifecycle(db, SolidAt(150), sink, grace_seconds=GRACE)  # type: ignore[arg-type]
    assert _sent(first) == {"confirmations": 0, "reverts": 0}
    # (and the orphaned block, which nothing had checked, is shown off the chain by the node)
    assert first[0]["orphans_checked"] == 1 and first[0]["canonical_blocks_restored"] == 0
    # Past it, the node's solidified head being 150, the confirmation and the revert are sent again
    _age(db)
    counts = run_lifecycle(db, SolidAt(150), sink, grace_seconds=GRACE)  # type: ignore[arg-type]
    assert _sent(counts) == {"confirmations": 1, "reverts": 1}
    assert (sink.confirmed, sink.reverted) == ([150], [[(100, gone.block_id)]])
    # but not while the broker holds a backlog the lost message may be in
    later = run_lifecycle(db, SolidAt(150), FakeSink(backlog=3), grace_seconds=GRACE)  # type: ignore[arg-type]
    assert _sent(later) == {"confirmations": 0, "reverts": 0}


def test_a_lot_matures_by_chain_time_not_by_the_wall_clock(db: psycopg.Connection) -> None:
    """A lot's status is decided once, by chain time (the listener checkpoint's block time): the
    summary, the records page and the lifecycle job agree, whatever the wall clock says."""
    # Given a lot of block 100 maturing DELAY (10 blocks) later: long past by the wall clock
    unfreeze = make_op("unfreeze", 100)
    persist_operations(db, [unfreeze], unfreeze_delay_seconds=DELAY)
    matures_at = 110
    assert block_time_ms(matures_at) == unfreeze.now_ms + DELAY * 1000

    def seen() -> tuple[str, int, int]:
        (row,) = fetch_records(db, "unfreeze", ALICE, 10).rows
        figures = read_summary(db, ALICE, DELAY * 1000).data["resources"]["ENERGY"]
        return row["status"], figures["withdrawable"], figures["unstaking"]["total"]

    # When the chain stands one block before the lot's expire time
    move_checkpoint(db, MAIN_CHECKPOINT, 0, matures_at - 1, "b", block_time_ms(matures_at - 1))
    # Then the lot is not withdrawable yet, in every view, even after the lifecycle job ran
    assert seen() == ("pending", 0, unfreeze.amount)
    _age(db)
    run_lifecycle(db, None, FakeSink(), grace_seconds=GRACE)
    assert seen() == ("pending", 0, unfreeze.amount)
    # And at its expire time it is withdrawable, in every view
    move_checkpoint(db, MAIN_CHECKPOINT, 0, matures_at, "b", block_time_ms(matures_at))
    assert seen() == ("withdrawable", unfreeze.amount, 0)
