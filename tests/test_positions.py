"""Golden tests of ledger.store.positions: crafted operations, expected values computed by hand from
java-tron's rules (the sources are cited in ledger/positions.py), and the real chain samples.

Time base: block n has timestamp T0 + 3 s * n, so its parent's time (java-tron's "now" for the
block's transactions) is T0 + 3 s * (n - 1), unless a test gives a missed slot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ledger.chain.account import AccountState, parse_account, parse_delegated_resources
from ledger.positions import Lot, Pair, Position, Row, opening, replay
from tests.test_persist import CONTRACTS
from web.positions import view

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
T0 = 1_700_000_000_000
DELAY = 30_000  # unfreeze delay in these tests: 10 slots
OWNER = "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ"
BOB = "TMHy1fRsYsD4gCgTZbysd9yH9AQFQnTZQS"
CAROL = "TDsCgUWZkyBLEEJXP2B1X81bASueT1Uqtf"

_counter = iter(range(1, 10**9))


def t(n: int) -> int:
    return T0 + 3000 * n


def row(
    block: int,
    kind: str,
    amount: int,
    resource: str | None = "ENERGY",
    *,
    contract: str | None = None,
    receiver: str | None = None,
    lock_period: int = 0,
    parent: int | None = None,
    tx_id: str | None = None,
    op_index: int = 0,
) -> Row:
    return Row(
        tx_id=tx_id or f"{next(_counter):064x}",
        op_index=op_index,
        block_num=block,
        tx_index=0,
        block_time_ms=t(block),
        parent_time_ms=t(block - 1) if parent is None else parent,
        contract_type=contract or CONTRACTS[kind],
        kind=kind,
        resource=resource,
        amount=amount,
        receiver=receiver,
        lock=lock_period > 0,
        lock_period=lock_period,
    )


def run(rows: list[Row], start: Position | None = None) -> Position:
    return replay(start or Position(), rows, DELAY)


def figures(pos: Position, now: int) -> dict[str, Any]:
    return view(pos, now)[0]


# -- delegation locks -------------------------------------------------------------------------------


def test_lock_then_expiry_then_delegate_merges_the_lock() -> None:
    lock_end = t(9) + 10 * 3000  # delegated in block 10: now = parent time t(9); 10 slots = t(19)
    rows = [row(1, "freeze", 1000), row(10, "delegate", 100, receiver=BOB, lock_period=10)]
    pos = run(rows)
    assert pos.pairs[(BOB, "ENERGY")] == Pair(unlocked=0, locked=100, expire_ms=lock_end)
    # Block 20: now = t(19) = the lock end, not < it: no merge, the new 50 is unlocked beside it.
    at_end = run([row(20, "delegate", 50, receiver=BOB)], Position.from_json(pos.to_json()))
    assert at_end.pairs[(BOB, "ENERGY")] == Pair(unlocked=50, locked=100, expire_ms=lock_end)
    # Block 21: now = t(20) > the lock end: merged first, then the 50 added.
    merged = run([row(21, "delegate", 50, receiver=BOB)], pos)
    assert merged.pairs[(BOB, "ENERGY")] == Pair(unlocked=150, locked=0, expire_ms=0)
    assert merged.staked["ENERGY"] == 1000 - 100 - 50
    assert merged.shortfall == {}


def test_undelegate_more_than_unlocked_takes_the_merged_expired_lock() -> None:
    rows = [
        row(1, "freeze", 1000),
        row(10, "delegate", 100, receiver=BOB, lock_period=10),  # locked until t(19)
        row(11, "delegate", 40, receiver=BOB),
        row(30, "undelegate", 90, receiver=BOB),  # now t(29) > t(19): 140 unlocked after the merge
    ]
    pos = run(rows)
    assert pos.pairs[(BOB, "ENERGY")] == Pair(unlocked=50, locked=0, expire_ms=0)
    assert pos.staked["ENERGY"] == 1000 - 140 + 90
    assert pos.shortfall == {}
    delegated = figures(pos, t(30))["ENERGY"]["delegated"]
    assert (delegated["total"], delegated["locked"], delegated["unlocked"]) == (50, 0, 50)


def test_a_reader_sees_an_expired_lock_as_unlocked() -> None:
    pos = run([row(1, "freeze", 1000), row(10, "delegate", 100, receiver=BOB, lock_period=10)])
    lock_end = t(19)
    before = figures(pos, lock_end)["ENERGY"]["delegated"]  # not < now yet: still locked
    assert (before["locked"], before["unlocked"]) == (100, 0)
    assert before["receivers"][0]["lock_end"] is not None
    after = figures(pos, lock_end + 1)["ENERGY"]["delegated"]
    assert (after["locked"], after["unlocked"]) == (0, 100)
    assert after["receivers"] == [{"receiver_address": BOB, "locked": 0, "unlocked": 100, "lock_end": None}]
    assert view(pos, t(10))[1] == lock_end + 1  # the page changes when the lock ends


def test_a_new_lock_adds_and_replaces_the_expire_time() -> None:
    rows = [
        row(1, "freeze", 1000),
        row(10, "delegate", 100, receiver=BOB, lock_period=100),  # until t(9) + 300 s = t(109)
        row(50, "delegate", 30, receiver=BOB, lock_period=100),  # until t(49) + 300 s = t(149)
    ]
    pos = run(rows)
    assert pos.pairs[(BOB, "ENERGY")] == Pair(unlocked=0, locked=130, expire_ms=t(149))
    # Past the first lock's end, all 130 stay locked: one expire time per locked record.
    assert figures(pos, t(120))["ENERGY"]["delegated"]["locked"] == 130
    # An undelegate between the two ends finds nothing unlocked: a shortfall, not < 0.
    short = run([row(120, "undelegate", 10, receiver=BOB)], Position.from_json(pos.to_json()))
    assert short.pairs[(BOB, "ENERGY")].unlocked == 0 and short.pairs[(BOB, "ENERGY")].locked == 130
    assert short.shortfall == {f"ENERGY.delegated.{BOB}": 10}


def test_the_lock_end_counts_from_the_parent_block_after_a_missed_slot() -> None:
    # Block 10's parent is block 8 (slot 9 missed): now = t(8), the lock ends at t(8) + 30 s.
    pos = run([row(1, "freeze", 1000), row(10, "delegate", 100, receiver=BOB, lock_period=10, parent=t(8))])
    assert pos.pairs[(BOB, "ENERGY")].expire_ms == t(18)


# -- unfreeze lots ------------------------------------------------------------------------------------


def test_withdraw_at_exactly_the_boundary_takes_the_lot() -> None:
    base = [row(1, "freeze", 1000), row(10, "unfreeze", 500)]  # lot expires at t(9) + 30 s = t(19)
    pos = run(base)
    assert pos.lots == [Lot("ENERGY", 500, t(19))]
    assert pos.staked["ENERGY"] == 500
    # Block 19: now = t(18) < t(19): nothing matured (the chain withdrew 0, so no row).
    early = run([row(19, "withdraw_expire_unfreeze", 0, None)], Position.from_json(pos.to_json()))
    assert early.lots == [Lot("ENERGY", 500, t(19))] and early.shortfall == {}
    # Block 20: now = t(19) = the expire time: withdrawn.
    done = run([row(20, "withdraw_expire_unfreeze", 500, None)], pos)
    assert done.lots == [] and done.shortfall == {}
    # The reader at t(19) already counts it withdrawable (the next block's withdraw takes it).
    assert figures(early, t(19))["ENERGY"]["withdrawable"] == 500
    assert figures(early, t(18))["ENERGY"]["unstaking"]["total"] == 500


def test_cancel_all_withdraws_matured_lots_and_restakes_pending_ones() -> None:
    cancel = f"{next(_counter):064x}"
    rows = [
        row(1, "freeze", 1000),
        row(1, "freeze", 1000, "BANDWIDTH"),
        row(10, "unfreeze", 100),  # ENERGY lot until t(19)
        row(15, "unfreeze", 200, "BANDWIDTH"),  # BANDWIDTH lot until t(24)
        row(18, "unfreeze", 300),  # ENERGY lot until t(27)
        # Block 25: now = t(24). Matured (<= now): 100 + 200 withdrawn; pending: 300 re-staked.
        row(25, "cancel_all_unfreeze", 300, "ENERGY", tx_id=cancel, op_index=0),
        row(
            25, "withdraw_expire_unfreeze", 300, None, contract="CancelAllUnfreezeV2Contract", tx_id=cancel, op_index=1
        ),
    ]
    pos = run(rows)
    assert pos.lots == []
    assert pos.staked == {"BANDWIDTH": 800, "ENERGY": 900, "TRON_POWER": 0}
    assert pos.shortfall == {}


def test_unfreeze_v2_withdraws_matured_lots_first() -> None:
    tx = f"{next(_counter):064x}"
    rows = [
        row(1, "freeze", 1000),
        row(10, "unfreeze", 100),  # until t(19)
        row(30, "unfreeze", 200, tx_id=tx, op_index=0),  # now t(29): the old lot auto-withdrawn
        row(30, "withdraw_expire_unfreeze", 100, None, contract="UnfreezeBalanceV2Contract", tx_id=tx, op_index=1),
    ]
    pos = run(rows)
    assert pos.lots == [Lot("ENERGY", 200, t(29) + DELAY)]
    assert pos.staked["ENERGY"] == 700 and pos.shortfall == {}


def test_v1_unfreeze_without_an_opening_v1_stake_is_a_shortfall_not_negative() -> None:
    pos = run([row(5, "unfreeze", 579_000_000, "BANDWIDTH", contract="UnfreezeBalanceContract")])
    assert pos.staked_v1["BANDWIDTH"] == 0
    assert pos.shortfall == {"BANDWIDTH.staked_v1": 579_000_000}
    assert figures(pos, t(6))["BANDWIDTH"]["staked_v1"] == 0


def test_no_figure_is_ever_negative_without_an_opening_state() -> None:
    rows = [
        row(5, "unfreeze", 579_000_000),
        row(6, "undelegate", 1_000_000, receiver=BOB),
        row(7, "withdraw_expire_unfreeze", 42, None),
    ]
    pos = run(rows)
    out = figures(pos, t(8))
    numbers = [out[r]["staked"] for r in out] + [out[r]["delegated"]["total"] for r in out]
    assert min(numbers) >= 0
    assert pos.shortfall == {"ENERGY.staked": 579_000_000, f"ENERGY.delegated.{BOB}": 1_000_000, "withdraw": 42}


def test_rows_at_or_below_the_start_block_are_not_applied_again() -> None:
    pos = run([row(1, "freeze", 1000), row(2, "freeze", 10), row(2, "freeze", 20)])
    assert pos.staked["ENERGY"] == 1030 and pos.block_num == 2
    again = run([row(2, "freeze", 20), row(3, "freeze", 5)], pos)
    assert again.staked["ENERGY"] == 1035


def test_json_round_trip() -> None:
    pos = run([row(1, "freeze", 1000), row(10, "delegate", 100, receiver=BOB, lock_period=10), row(12, "unfreeze", 7)])
    assert Position.from_json(pos.to_json()) == pos


# -- the real samples ------------------------------------------------------------------------------------


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_mainnet_account_added_mid_history_shows_the_chains_figures() -> None:
    """TGusX's mainnet getaccount as the opening state; its first operations seen are an
    UnfreezeBalanceV2 and an UnDelegateResource (a real account whose figures once came out at -579 TRX)."""
    account = parse_account(load("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json"))
    # getaccount gives the delegated total (3,552,150 ENERGY sun); the receivers' records come from
    # getdelegatedresourcev2. There is no such sample for this account, so one receiver holds it.
    records = parse_delegated_resources(
        {"delegatedResource": [{"from": OWNER, "to": BOB, "frozen_balance_for_energy": 3_552_150}]}
    )
    start = opening(account, records, block_num=100)
    assert start.shortfall == {}
    last_op = 1_752_739_794_000  # the account's latest_opration_time, past its lot's expire time
    unfreeze = f"{next(_counter):064x}"
    rows = [
        Row(unfreeze, 0, 101, 0, last_op + 3000, last_op, "UnfreezeBalanceV2Contract", "unfreeze", "ENERGY", 579_000_000),  # noqa: E501
        # The lot of 1 TRX expired at 1752679197000 < now: UnfreezeBalanceV2 withdraws it first.
        Row(unfreeze, 1, 101, 0, last_op + 3000, last_op, "UnfreezeBalanceV2Contract", "withdraw_expire_unfreeze", None, 1_000_000),  # noqa: E501
        Row("ab" * 32, 0, 102, 0, last_op + 6000, last_op + 3000, "UnDelegateResourceContract", "undelegate", "ENERGY", 1_000_000, BOB),  # noqa: E501
    ]  # fmt: skip
    pos = replay(start, rows, 14 * 86_400_000)
    out = figures(pos, last_op + 6000)
    assert out["ENERGY"]["staked"] == 3_715_447_850 - 579_000_000 + 1_000_000 == 3_137_447_850
    assert out["BANDWIDTH"]["staked"] == 5_041_000_000
    assert out["ENERGY"]["delegated"]["unlocked"] == 3_552_150 - 1_000_000
    assert out["ENERGY"]["unstaking"]["lots"] == [
        {"amount": 579_000_000, "expire_time": view(pos, 0)[0]["ENERGY"]["unstaking"]["lots"][0]["expire_time"]}
    ]
    assert pos.lots == [Lot("ENERGY", 579_000_000, last_op + 14 * 86_400_000)]
    assert out["ENERGY"]["withdrawable"] == 0
    assert pos.shortfall == {}


def test_nile_locked_record_opening_then_undelegate_from_the_unlocked_part() -> None:
    records = parse_delegated_resources(load("nile_getdelegatedresourcev2_visible_true.json"))
    # No getaccount sample of this Nile account: its totals are made to agree with the record.
    account = AccountState(
        address=CAROL,
        balance=0,
        frozen_v2={"BANDWIDTH": 10_000_000, "ENERGY": 20_000_000, "TRON_POWER": 0},
        unfrozen_v2=(),
        delegated_v2={"BANDWIDTH": 308_593_660, "ENERGY": 677_377_195},
        acquired_delegated_v2={"BANDWIDTH": 0, "ENERGY": 0},
        frozen_v1={"BANDWIDTH": 0, "ENERGY": 0, "TRON_POWER": 0},
    )
    lock_end = 1_785_353_340_000
    start = opening(account, records, block_num=500)
    assert start.pairs[(BOB, "ENERGY")] == Pair(unlocked=0, locked=677_377_195, expire_ms=lock_end)
    assert start.pairs[(BOB, "BANDWIDTH")] == Pair(unlocked=308_593_660, locked=0, expire_ms=0)
    now = lock_end - 86_400_000  # a day before the lock ends
    undelegate = Row("cd" * 32, 0, 501, 0, now + 3000, now, "UnDelegateResourceContract", "undelegate", "BANDWIDTH", 1_000_000, BOB)  # fmt: skip  # noqa: E501
    pos = replay(start, [undelegate], DELAY)
    out = figures(pos, now + 3000)
    assert out["BANDWIDTH"]["delegated"]["unlocked"] == 307_593_660
    assert out["BANDWIDTH"]["staked"] == 11_000_000
    assert (out["ENERGY"]["delegated"]["locked"], out["ENERGY"]["delegated"]["unlocked"]) == (677_377_195, 0)
    # After the lock's end a reader sees it unlocked, although the chain still lists it locked.
    later = figures(pos, lock_end + 1)["ENERGY"]["delegated"]
    assert (later["locked"], later["unlocked"]) == (0, 677_377_195)
    assert pos.shortfall == {}


def test_opening_reports_a_delegated_total_the_records_do_not_explain() -> None:
    account = parse_account(load("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json"))
    start = opening(account, [], block_num=1)
    assert start.shortfall == {"ENERGY.opening_delegated": 3_552_150}
    assert start.staked["ENERGY"] == 3_715_447_850 and start.lots == [Lot("ENERGY", 1_000_000, 1_752_679_197_000)]
