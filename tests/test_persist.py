"""The worker's SQL: idempotent, monotonic, order-independent persistence (no Dramatiq involved).

Each test runs in the `db` fixture's transaction, which is rolled back afterwards.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from harness.stack import wait_until
from ledger.domain import Operation, PayloadError
from ledger.store.deadletters import get_dead_letter, list_dead_letters, record_dead_letter
from workers.persist import confirm_blocks, persist_operations

ALICE = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
BOB = "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ"
CAROL = "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
DAVE = "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK"

BASE_MS = 1_700_000_000_000  # block 0's time; blocks are 3 s apart
DELAY = 30  # unfreeze delay (s) used throughout: 10 blocks

CONTRACTS = {
    "freeze": "FreezeBalanceV2Contract",
    "unfreeze": "UnfreezeBalanceV2Contract",
    "withdraw_expire_unfreeze": "WithdrawExpireUnfreezeContract",
    "cancel_all_unfreeze": "CancelAllUnfreezeV2Contract",
    "delegate": "DelegateResourceContract",
    "undelegate": "UnDelegateResourceContract",
}


def make_op(kind: str, block: int = 100, *, tx_index: int = 0, op_index: int = 0, **fields: Any) -> Operation:
    """An Operation as the parser would give it; tx_id derived from (block, tx_index) unless given."""
    values: dict[str, Any] = {
        "tx_id": hashlib.sha256(f"{block}/{tx_index}".encode()).hexdigest(),
        "op_index": op_index,
        "block_num": block,
        "block_id": f"{block:016x}" + "ab" * 24,
        "tx_index": tx_index,
        "block_time_ms": block_time_ms(block),
        "contract_type": CONTRACTS[kind],
        "kind": kind,
        "owner_address": ALICE,
        "resource": None if kind == "withdraw_expire_unfreeze" else "ENERGY",
        "amount": 1_000_000,
    }
    if kind in ("delegate", "undelegate"):
        values["receiver_address"] = BOB
    values.update(fields)
    return Operation(**values)


def block_time_ms(block: int) -> int:
    return BASE_MS + block * 3000


def block_time(block: int) -> datetime:
    return datetime.fromtimestamp(BASE_MS / 1000, UTC) + timedelta(seconds=3 * block)


def one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row a query must return."""
    row = cursor.fetchone()
    assert row is not None, "no row"
    return tuple(row)


def persist(conn: psycopg.Connection, op: Operation) -> set[str]:
    return persist_operations(conn, [op], unfreeze_delay_seconds=DELAY)


def stake_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT tx_id, op_index, block_num, operation_type, amount, status FROM stake_records"
        " ORDER BY block_num, op_index"
    ).fetchall()


def lots(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT block_num, status, settled_tx_id, confirmed FROM unfreeze_records ORDER BY block_num"
    ).fetchall()


def set_solid(conn: psycopg.Connection, block: int) -> None:
    conn.execute("UPDATE chain_state SET solid_block = %s", (block,))


# --- stake and delegate rows ---------------------------------------------------------------------


def test_insert_is_idempotent_and_returns_accounts(db: psycopg.Connection) -> None:
    op = make_op("freeze")
    assert persist(db, op) == {ALICE}
    assert persist(db, op) == {ALICE}  # a duplicate still invalidates: the first may have failed to
    row = db.execute("SELECT block_time, status, resource, contract_type FROM stake_records").fetchall()
    assert row == [(block_time(100), "pending", "ENERGY", "FreezeBalanceV2Contract")]


def test_block_time_keeps_milliseconds(db: psycopg.Connection) -> None:
    persist(db, make_op("freeze", block_time_ms=1_700_000_000_123))
    (stored,) = one(db.execute("SELECT block_time FROM stake_records"))
    assert stored == datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)


def test_status_only_moves_forward(db: psycopg.Connection) -> None:
    confirmed = make_op("freeze", 10, status="confirmed")
    persist(db, confirmed)
    persist(db, make_op("freeze", 10, status="pending", block_id="f" * 64))  # a late replay
    failed = make_op("freeze", 11, status="failed", contract_ret="OUT_OF_ENERGY")
    persist(db, failed)
    persist(db, make_op("freeze", 11, status="pending"))
    persist(db, make_op("freeze", 11, status="confirmed"))
    pending = make_op("freeze", 12)
    persist(db, pending)
    persist(db, pending.with_status("confirmed"))
    persist(db, pending)
    rows = db.execute(
        "SELECT block_num, block_id, status, contract_ret FROM stake_records ORDER BY block_num"
    ).fetchall()
    assert rows == [
        (10, confirmed.block_id, "confirmed", None),  # data of a confirmed row is not refreshed
        (11, failed.block_id, "failed", "OUT_OF_ENERGY"),
        (12, pending.block_id, "confirmed", None),
    ]


def test_pending_row_takes_new_data(db: psycopg.Connection) -> None:
    persist(db, make_op("freeze", 10))
    persist(db, make_op("freeze", 10, block_id="e" * 64, amount=5))
    assert db.execute("SELECT block_id, amount FROM stake_records").fetchall() == [("e" * 64, 5)]


def test_insert_at_or_below_solid_block_is_confirmed(db: psycopg.Connection) -> None:
    set_solid(db, 100)
    persist(db, make_op("freeze", 100))
    persist(db, make_op("freeze", 101))
    persist(db, make_op("delegate", 99))
    persist(db, make_op("freeze", 98, status="failed"))
    assert [r[-1] for r in stake_rows(db)] == ["failed", "confirmed", "pending"]
    assert db.execute("SELECT status FROM delegate_records").fetchall() == [("confirmed",)]


def test_amounts_beyond_2_pow_53_are_exact(db: psycopg.Connection) -> None:
    big = 2**62 + 12_345  # not representable as a float
    persist(db, make_op("freeze", amount=big))
    persist(db, make_op("delegate", 101, amount=big + 1))
    assert db.execute("SELECT amount FROM stake_records").fetchone() == (big,)
    assert db.execute("SELECT amount FROM delegate_records").fetchone() == (big + 1,)


def test_locked_and_unlocked_delegations_are_separate_rows(db: psycopg.Connection) -> None:
    assert persist(db, make_op("delegate", 100, tx_index=0, lock=True, lock_period=100)) == {ALICE, BOB}
    persist(db, make_op("delegate", 100, tx_index=1))
    rows = db.execute(
        "SELECT tx_index, lock, lock_period, lock_expire_time, receiver_address FROM delegate_records ORDER BY tx_index"
    ).fetchall()
    assert rows == [
        (0, True, 100, block_time(100) + timedelta(seconds=300), BOB),
        (1, False, 0, None, BOB),
    ]


@pytest.mark.parametrize(
    "op",
    [
        make_op("freeze", amount=2**63),
        make_op("freeze", op_index=40_000),
        make_op("delegate", resource=None),
        make_op("unfreeze", resource=None),
    ],
    ids=["amount", "op_index", "delegate-resource", "lot-resource"],
)
def test_unstorable_operation_is_poison(db: psycopg.Connection, op: Operation) -> None:
    with pytest.raises(PayloadError):
        persist(db, op)


# --- unfreeze lots and their settlement ----------------------------------------------------------


def test_unfreeze_v2_creates_a_lot(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100, amount=7))
    persist(db, make_op("unfreeze", 101, contract_type="UnfreezeBalanceContract"))  # V1: no lot
    persist(db, make_op("unfreeze", 102, status="failed"))  # failed: no lot
    rows = db.execute("SELECT block_num, amount, available_time, status, confirmed FROM unfreeze_records").fetchall()
    assert rows == [(100, 7, block_time(100) + timedelta(seconds=DELAY), "pending", False)]


def test_withdraw_settles_matured_lots_only(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))  # available at block 110
    persist(db, make_op("unfreeze", 105))  # available at block 115
    withdraw = make_op("withdraw_expire_unfreeze", 112)
    persist(db, withdraw)
    assert lots(db) == [(100, "withdrawn", withdraw.tx_id, False), (105, "pending", None, False)]
    (settled_time,) = one(db.execute("SELECT settled_time FROM unfreeze_records WHERE block_num = 100"))
    assert settled_time == block_time(112)


def test_cancel_withdraws_matured_and_cancels_the_rest(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))
    persist(db, make_op("unfreeze", 105))
    cancel = make_op("cancel_all_unfreeze", 112)
    persist(db, cancel)
    assert lots(db) == [(100, "withdrawn", cancel.tx_id, False), (105, "cancelled", cancel.tx_id, False)]


def test_failed_withdraw_settles_nothing_and_a_late_failure_reopens(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))
    persist(db, make_op("withdraw_expire_unfreeze", 111, status="failed"))
    withdraw = make_op("withdraw_expire_unfreeze", 112)
    persist(db, withdraw)
    assert lots(db) == [(100, "withdrawn", withdraw.tx_id, False)]
    persist(db, withdraw.with_status("failed"))  # the pending row may still become failed
    assert lots(db) == [(100, "pending", None, False)]


def test_an_earlier_event_arriving_late_takes_over(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))
    persist(db, make_op("withdraw_expire_unfreeze", 130))
    cancel = make_op("cancel_all_unfreeze", 104)  # before maturity: the lot was cancelled
    persist(db, cancel)
    assert lots(db) == [(100, "cancelled", cancel.tx_id, False)]


def test_auto_withdraw_in_the_same_transaction_settles_only_older_lots(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))
    lot = make_op("unfreeze", 120, op_index=0)
    auto = make_op("withdraw_expire_unfreeze", 120, op_index=1, tx_id=lot.tx_id, contract_type=lot.contract_type)
    persist(db, auto)
    persist(db, lot)
    assert lots(db) == [(100, "withdrawn", lot.tx_id, False), (120, "pending", None, False)]


def test_settlement_does_not_depend_on_message_order(db: psycopg.Connection) -> None:
    ops = [
        make_op("unfreeze", 100, resource="ENERGY"),
        make_op("unfreeze", 104, resource="BANDWIDTH"),
        make_op("withdraw_expire_unfreeze", 112),  # settles the first only
        make_op("cancel_all_unfreeze", 113, status="confirmed"),  # settles the second
        make_op("unfreeze", 120, owner_address=CAROL),  # another owner's lot, never settled
        make_op("withdraw_expire_unfreeze", 140, owner_address=DAVE),
    ]
    results = set()
    for i, order in enumerate(itertools.permutations(ops[:4])):
        others = ops[4:] if i % 2 else ops[:3:-1]  # the other owners' ops, first or last
        sequence = [*others, *order, order[0]] if i % 3 else [*order, *others, order[-1]]  # plus a duplicate
        with db.transaction(force_rollback=True):
            for op in sequence:
                persist(db, op)
            results.add(tuple(lots(db)))
    assert results == {
        (
            (100, "withdrawn", ops[2].tx_id, False),
            (104, "cancelled", ops[3].tx_id, False),
            (120, "pending", None, False),
        )
    }


# --- confirmation --------------------------------------------------------------------------------


def test_confirm_blocks_confirms_pending_rows_up_to_the_solid_block(db: psycopg.Connection) -> None:
    persist(db, make_op("unfreeze", 100))
    persist(db, make_op("freeze", 101, owner_address=CAROL, status="failed"))
    persist(db, make_op("delegate", 102, owner_address=DAVE))
    persist(db, make_op("freeze", 103, owner_address=CAROL))
    assert confirm_blocks(db, 102) == {ALICE, DAVE, BOB}
    assert [r[-1] for r in stake_rows(db)] == ["confirmed", "failed", "pending"]
    assert db.execute("SELECT status FROM delegate_records").fetchall() == [("confirmed",)]
    assert lots(db) == [(100, "pending", None, True)]
    assert confirm_blocks(db, 90) == set()  # a late, lower confirmation changes nothing
    assert db.execute("SELECT solid_block FROM chain_state").fetchone() == (102,)
    assert confirm_blocks(db, 103) == {CAROL}


def test_confirmation_before_the_insert_is_not_lost(db: psycopg.Connection) -> None:
    confirm_blocks(db, 200)
    persist(db, make_op("unfreeze", 150))
    assert [r[-1] for r in stake_rows(db)] == ["confirmed"]
    assert lots(db) == [(150, "pending", None, True)]


@pytest.mark.parametrize("kind", ["freeze", "delegate", "unfreeze"])
def test_a_persist_that_waited_for_a_confirmation_stores_its_row_confirmed(clean_db: str, kind: str) -> None:
    # Given a confirmation of block 200 that has confirmed what it sees and not committed yet
    with psycopg.connect(clean_db) as confirming, psycopg.connect(clean_db, autocommit=True) as worker:
        confirming.execute("SELECT 1")  # its transaction: confirm_blocks runs in a savepoint
        confirm_blocks(confirming, 200)
        # When a worker persists a pending row of block 150 meanwhile (it waits for the confirm lock)
        pid = worker.info.backend_pid
        thread = threading.Thread(target=persist, args=(worker, make_op(kind, 150)))
        thread.start()

        def waiting() -> bool:
            row = confirming.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)", (pid,)
            ).fetchone()
            return bool(row and row[0])

        wait_until(waiting, 10, "the persist to wait for the confirm lock")
        confirming.commit()
        thread.join(10)
        # Then the row is stored confirmed: the confirmation could not see it, and the next may be far off
        table = "delegate_records" if kind == "delegate" else "stake_records"
        assert worker.execute(f"SELECT status FROM {table}").fetchall() == [("confirmed",)]


def test_confirm_rejects_a_non_number(db: psycopg.Connection) -> None:
    with pytest.raises(PayloadError):
        confirm_blocks(db, "12")  # type: ignore[arg-type]


# --- dead letters (shared module) ----------------------------------------------------------------


def test_dead_letters_list_and_get(db: psycopg.Connection) -> None:
    ids = [
        record_dead_letter(
            db,
            message_id=f"m{i}",
            queue_name="ledger",
            actor_name="persist_operation",
            args=[{"n": i}],
            error_type="ledger.domain.PayloadError",
            error="bad",
            retries=i,
        )
        for i in range(3)
    ]
    page = list_dead_letters(db, limit=2)
    assert [d["id"] for d in page] == [ids[2], ids[1]]
    assert [d["id"] for d in list_dead_letters(db, before_id=ids[1])] == [ids[0]]
    one = get_dead_letter(db, ids[0])
    assert one is not None and one["args"] == [{"n": 0}] and isinstance(one["failed_at"], str)
    assert get_dead_letter(db, -1) is None


# --- groups (persist_operations: the listener's messages) -------------------------------------------


def _history(seed: int) -> list[Operation]:
    """One owner's lots, withdraws, cancels (some failed, some also sent as a pending copy, as a
    listener sees a record before it solidifies) and plain rows, with delegations to BOB."""
    rnd = random.Random(seed)
    ops: list[Operation] = []
    for i in range(40):
        block = 100 + 2 * i
        kind = rnd.choice(
            ["unfreeze", "unfreeze", "withdraw_expire_unfreeze", "cancel_all_unfreeze", "freeze", "delegate"]
        )
        status = "failed" if rnd.random() < 0.15 else rnd.choice(["pending", "confirmed"])
        ops.append(make_op(kind, block, status=status, contract_ret="REVERT" if status == "failed" else None))
        if rnd.random() < 0.3:  # a redelivery, or a success also sent while it was pending
            ops.append(ops[-1] if status == "failed" else make_op(kind, block, status="pending"))
    return ops


def _state(conn: psycopg.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    delegations = conn.execute(
        "SELECT tx_id, block_num, status FROM delegate_records ORDER BY block_num, tx_id"
    ).fetchall()
    lot_rows = conn.execute(
        "SELECT tx_id, status, settled_tx_id, settled_time, available_time, confirmed FROM unfreeze_records"
        " ORDER BY block_num"
    ).fetchall()
    return stake_rows(conn), delegations, lot_rows


@pytest.mark.parametrize("seed", range(6))
def test_a_group_ends_as_its_operations_one_by_one_in_any_grouping(db: psycopg.Connection, seed: int) -> None:
    ops = _history(seed)
    set_solid(db, 120)
    db.execute("SAVEPOINT one_by_one")
    for op in ops:
        persist(db, op)
    expected = _state(db)
    db.execute("ROLLBACK TO SAVEPOINT one_by_one")
    assert _state(db) == ([], [], [])

    shuffled = ops[:]
    random.Random(seed).shuffle(shuffled)
    touched: set[str] = set()
    cut = sorted(random.Random(seed + 100).sample(range(1, len(shuffled)), 3))
    for group in (shuffled[a:b] for a, b in zip([0, *cut], [*cut, len(shuffled)], strict=True)):
        touched |= persist_operations(db, group, unfreeze_delay_seconds=DELAY)
    assert _state(db) == expected
    assert touched == {ALICE} | ({BOB} if any(op.kind == "delegate" for op in ops) else set())
    # A replay of the whole history as one group changes nothing.
    persist_operations(db, ops, unfreeze_delay_seconds=DELAY)
    assert _state(db) == expected


def test_a_group_with_an_unstorable_operation_writes_nothing(db: psycopg.Connection) -> None:
    good, bad = make_op("freeze", 100), make_op("freeze", 101, tx_index=2**31)
    with pytest.raises(PayloadError, match="tx_index"):
        persist_operations(db, [good, bad], unfreeze_delay_seconds=DELAY)
    assert stake_rows(db) == []
