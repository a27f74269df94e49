"""Fork semantics of the worker's SQL: records from blocks that left the chain become orphaned,
whatever order the messages arrive in; a transaction that reappears on the new branch takes the
new block; nothing from an orphaned block is ever confirmed."""

from __future__ import annotations

import dataclasses

import psycopg

from tests.test_persist import ALICE, BOB, make_op, persist
from workers.persist import confirm_blocks, revert_blocks

OLD = "0000000000000064" + "aa" * 24  # block 100 on the branch that left
NEW = "0000000000000065" + "bb" * 24  # block 101 on the canonical branch


def status(conn: psycopg.Connection, table: str, tx_id: str) -> tuple[str, int, str]:
    row = conn.execute(f"SELECT status, block_num, block_id FROM {table} WHERE tx_id = %s", (tx_id,)).fetchone()
    assert row is not None
    return row


def test_revert_orphans_pending_rows_and_a_reappearance_takes_the_new_block(db: psycopg.Connection) -> None:
    op = make_op("freeze", 100, block_id=OLD)
    persist(db, op)
    assert revert_blocks(db, [[100, OLD]]) == {ALICE}
    assert status(db, "stake_records", op.tx_id) == ("orphaned", 100, OLD)
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    assert status(db, "stake_records", op.tx_id) == ("pending", 101, NEW)


def test_reappearance_before_the_revert_is_not_orphaned(db: psycopg.Connection) -> None:
    op = make_op("delegate", 100, block_id=OLD)
    persist(db, op)
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    revert_blocks(db, [[100, OLD]])
    assert status(db, "delegate_records", op.tx_id) == ("pending", 101, NEW)


def test_late_message_from_an_orphaned_block_never_overwrites_the_canonical_row(db: psycopg.Connection) -> None:
    op = make_op("freeze", 100, block_id=OLD)
    revert_blocks(db, [[100, OLD]])  # the listener recorded the fork before this message was handled
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    persist(db, op)
    assert status(db, "stake_records", op.tx_id) == ("pending", 101, NEW)


def test_late_message_from_an_orphaned_block_is_stored_orphaned(db: psycopg.Connection) -> None:
    op = make_op("undelegate", 100, block_id=OLD)
    revert_blocks(db, [[100, OLD]])
    persist(db, op)
    assert status(db, "delegate_records", op.tx_id) == ("orphaned", 100, OLD)


def test_confirmation_skips_orphaned_blocks(db: psycopg.Connection) -> None:
    orphan = make_op("freeze", 100, block_id=OLD)
    kept = make_op("freeze", 101, block_id=NEW)
    persist(db, orphan)
    persist(db, kept)
    db.execute("INSERT INTO orphaned_blocks (block_num, block_id) VALUES (100, %s)", (OLD,))
    confirm_blocks(db, 200)
    assert status(db, "stake_records", orphan.tx_id)[0] == "pending"
    assert status(db, "stake_records", kept.tx_id)[0] == "confirmed"
    revert_blocks(db, [[100, OLD]])
    assert status(db, "stake_records", orphan.tx_id)[0] == "orphaned"


def test_orphaned_withdraw_reopens_the_lot_it_settled(db: psycopg.Connection) -> None:
    # Given a lot (block 10, matures 10 blocks later) withdrawn in block 100 of a branch that left
    lot = make_op("unfreeze", 10)
    withdraw = make_op("withdraw_expire_unfreeze", 100, block_id=OLD)
    persist(db, lot)
    persist(db, withdraw)
    lot_status = "SELECT status, settled_tx_id FROM unfreeze_records WHERE tx_id = %s"
    assert db.execute(lot_status, (lot.tx_id,)).fetchone() == ("withdrawn", withdraw.tx_id)
    # When the block is reverted, then the lot is open again
    revert_blocks(db, [[100, OLD]])
    assert db.execute(lot_status, (lot.tx_id,)).fetchone() == ("pending", None)


def test_orphaned_unfreeze_orphans_its_lot_and_reappearance_reopens_it(db: psycopg.Connection) -> None:
    lot = make_op("unfreeze", 100, block_id=OLD)
    persist(db, lot)
    revert_blocks(db, [[100, OLD]])
    lot_status = "SELECT status, block_num FROM unfreeze_records WHERE tx_id = %s"
    assert db.execute(lot_status, (lot.tx_id,)).fetchone() == ("orphaned", 100)
    persist(db, dataclasses.replace(lot, block_num=101, block_id=NEW))
    assert db.execute(lot_status, (lot.tx_id,)).fetchone() == ("pending", 101)


# Failed transactions in a block that left the chain: a failed row is final only once its block is
# solidified, so a fork orphans it like a pending one and a re-inclusion moves it to its new block.


def test_revert_orphans_failed_rows_and_a_reappearance_takes_the_new_block(db: psycopg.Connection) -> None:
    op = make_op("delegate", 100, block_id=OLD, status="failed", contract_ret="OUT_OF_ENERGY")
    persist(db, op)
    assert revert_blocks(db, [[100, OLD]]) == {ALICE, BOB}
    assert status(db, "delegate_records", op.tx_id) == ("orphaned", 100, OLD)
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    assert status(db, "delegate_records", op.tx_id) == ("failed", 101, NEW)


def test_failed_row_reappearing_before_the_revert_takes_the_new_block(db: psycopg.Connection) -> None:
    # The listener records the orphaned block before it enqueues anything of the new branch; the
    # new branch's message may still be handled before the revert message.
    op = make_op("freeze", 100, block_id=OLD, status="failed", contract_ret="OUT_OF_ENERGY")
    persist(db, op)
    db.execute("INSERT INTO orphaned_blocks (block_num, block_id) VALUES (100, %s)", (OLD,))
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW, status="pending", contract_ret="SUCCESS"))
    assert status(db, "stake_records", op.tx_id) == ("pending", 101, NEW)
    revert_blocks(db, [[100, OLD]])
    assert status(db, "stake_records", op.tx_id) == ("pending", 101, NEW)


def test_late_failed_message_from_an_orphaned_block_is_orphaned_and_never_overwrites(db: psycopg.Connection) -> None:
    op = make_op("freeze", 100, block_id=OLD, status="failed", contract_ret="OUT_OF_ENERGY")
    revert_blocks(db, [[100, OLD]])
    persist(db, op)
    assert status(db, "stake_records", op.tx_id) == ("orphaned", 100, OLD)
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    persist(db, op)  # a redelivery of the orphaned copy
    assert status(db, "stake_records", op.tx_id) == ("failed", 101, NEW)


def test_failed_row_of_a_solidified_block_is_final(db: psycopg.Connection) -> None:
    op = make_op("freeze", 100, status="failed", contract_ret="OUT_OF_ENERGY")
    persist(db, op)
    persist(db, dataclasses.replace(op, status="pending", contract_ret="SUCCESS"))
    assert status(db, "stake_records", op.tx_id)[0] == "failed"


def test_a_transaction_orphaned_twice_keeps_the_last_block_it_was_in(db: psycopg.Connection) -> None:
    # Block 100 left the chain, its transaction was re-packed in 101, and 101 left too; the copy
    # from 101 is handled after both reverts (so it arrives as orphaned).
    op = make_op("delegate", 100, block_id=OLD)
    persist(db, op)
    revert_blocks(db, [[100, OLD]])
    revert_blocks(db, [[101, NEW]])
    persist(db, dataclasses.replace(op, block_num=101, block_id=NEW))
    assert status(db, "delegate_records", op.tx_id) == ("orphaned", 101, NEW)
    persist(db, op)  # a redelivery of the older copy changes nothing
    assert status(db, "delegate_records", op.tx_id) == ("orphaned", 101, NEW)
