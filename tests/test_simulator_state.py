"""Golden tests: the simulator's account state by java-tron's rules, with hand-computed numbers.

Each scenario is a scripted chain (SimNode.submit, the Python side of POST /sim/submit) with
explicit block timestamps. The rules pinned here (java-tron sources cited in
simulator/stake_state.py): the actuators' "now" is the PARENT block's timestamp; a lock's
expire time is replaced by a new lock; expired locks merge into the unlocked record only
before a delegate/undelegate (expire < now), undelegate takes only unlocked stake; lots mature
when expire <= now; cancel-all withdraws matured lots and re-stakes pending ones; V1 stake can
only be unfrozen if it existed before (opening state) and has expired.

T0 is the first block's timestamp, so the first block's transactions run at T0 - 3000.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from simulator.addresses import derive_address, hex_to_base58
from simulator.config import parse_config
from simulator.control import account_state, contract_from_json
from simulator.node import SimNode
from simulator.stake_state import Rejected

T0 = 1_800_000_000_000  # a multiple of 3000
TRX = 1_000_000
A = hex_to_base58(derive_address("golden:A"))
B = hex_to_base58(derive_address("golden:B"))


def make_node(opening: dict[str, Any], delay_seconds: int = 60) -> SimNode:
    args = ["--paused", "--accounts", A, "--ops-per-block", "0", "--noise-per-block", "0"]
    args += ["--unfreeze-delay-seconds", str(delay_seconds), "--opening-state", json.dumps(opening)]
    return SimNode(parse_config(args, {}))


def submit(node: SimNode, at: int, *txs: dict[str, Any]) -> list[Any]:
    block = node.submit([contract_from_json(tx) for tx in txs], at)
    return [tx.info for tx in block.txs]


def state(node: SimNode, address: str = A, block: int | None = None) -> dict[str, Any]:
    head = node.store.head()
    assert head is not None
    number = head.number if block is None else block
    found = node.store.block(number)
    view = node.view.account(hex_of(address), number)
    assert found is not None and view is not None
    return account_state(view, number, found.timestamp, node.book)


def hex_of(address: str) -> str:
    from simulator.addresses import base58_to_hex

    return base58_to_hex(address)


def delegate(amount: int, resource: str = "ENERGY", lock: bool = False, period: int = 0) -> dict[str, Any]:
    return {
        "type": "DelegateResourceContract",
        "owner_address": A,
        "receiver_address": B,
        "resource": resource,
        "balance": amount,
        "lock": lock,
        "lock_period": period,
    }


def undelegate(amount: int, resource: str = "ENERGY") -> dict[str, Any]:
    return {
        "type": "UnDelegateResourceContract",
        "owner_address": A,
        "receiver_address": B,
        "resource": resource,
        "balance": amount,
    }


def records(node: SimNode) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "to"} for r in state(node)["delegations"]]


def test_lock_then_expiry_then_delegate_merges() -> None:
    node = make_node({A: {"frozenV2": {"ENERGY": 100 * TRX}}})
    submit(node, T0, delegate(10 * TRX, lock=True, period=2))  # now T0-3000: lock ends T0+3000
    submit(node, T0 + 3000)
    # Missed slots: the next block's now is its parent's time, T0+3000 == the lock end: not expired.
    submit(node, T0 + 9000, delegate(5 * TRX))
    assert records(node) == [
        {
            "locked": False,
            "BANDWIDTH": 0,
            "ENERGY": 5 * TRX,
            "expire_time_for_bandwidth": 0,
            "expire_time_for_energy": 0,
        },
        {
            "locked": True,
            "BANDWIDTH": 0,
            "ENERGY": 10 * TRX,
            "expire_time_for_bandwidth": 0,
            "expire_time_for_energy": T0 + 3000,
        },
    ]
    # After this block the lock is expired for any later transaction, but it is still listed.
    assert state(node)["effective_locked"] == {"BANDWIDTH": 0, "ENERGY": 0}
    submit(node, T0 + 12000, delegate(1 * TRX))  # now T0+9000 > T0+3000: merged first
    assert records(node) == [
        {
            "locked": False,
            "BANDWIDTH": 0,
            "ENERGY": 16 * TRX,
            "expire_time_for_bandwidth": 0,
            "expire_time_for_energy": 0,
        }
    ]
    now = state(node)
    assert now["frozenV2"]["ENERGY"] == 84 * TRX
    assert now["delegated"]["ENERGY"] == 16 * TRX
    assert state(node, B)["acquired"]["ENERGY"] == 16 * TRX
    # The state at an earlier block is still answerable.
    assert state(node, A, node.config.start_block)["delegated"]["ENERGY"] == 10 * TRX


def test_undelegate_more_than_unlocked_before_merge() -> None:
    node = make_node({A: {"frozenV2": {"BANDWIDTH": 50 * TRX}}})
    submit(node, T0, delegate(4 * TRX, "BANDWIDTH"))
    submit(node, T0 + 3000, delegate(6 * TRX, "BANDWIDTH", lock=True, period=1))  # ends T0+3000
    head = node.store.head()
    with pytest.raises(Rejected, match="insufficient"):
        submit(node, T0 + 6000, undelegate(7 * TRX, "BANDWIDTH"))  # now T0+3000: lock not expired
    assert node.store.head() == head  # nothing produced
    submit(node, T0 + 6000)
    submit(node, T0 + 9000, undelegate(7 * TRX, "BANDWIDTH"))  # now T0+6000: 4 + 6 merged, 7 taken
    assert records(node) == [
        {
            "locked": False,
            "BANDWIDTH": 3 * TRX,
            "ENERGY": 0,
            "expire_time_for_bandwidth": 0,
            "expire_time_for_energy": 0,
        }
    ]
    now = state(node)
    assert (now["frozenV2"]["BANDWIDTH"], now["delegated"]["BANDWIDTH"]) == (47 * TRX, 3 * TRX)
    assert state(node, B)["acquired"]["BANDWIDTH"] == 3 * TRX


def test_new_lock_replaces_the_expire_time() -> None:
    node = make_node({A: {"frozenV2": {"ENERGY": 100 * TRX}}})
    submit(node, T0, delegate(10 * TRX, lock=True, period=100))  # ends T0-3000+300000 = T0+297000
    with pytest.raises(Rejected, match="remaining"):
        submit(node, T0 + 3000, delegate(5 * TRX, lock=True, period=50))  # 150 s < 297 s remaining
    submit(node, T0 + 3000, delegate(5 * TRX, lock=True, period=200))  # now T0: ends T0+600000
    assert records(node) == [
        {
            "locked": True,
            "BANDWIDTH": 0,
            "ENERGY": 15 * TRX,
            "expire_time_for_bandwidth": 0,
            "expire_time_for_energy": T0 + 600_000,
        }
    ]
    submit(node, T0 + 300_000)
    # now T0+300000 is past the first lock's own end, but that end was replaced: nothing is free.
    with pytest.raises(Rejected, match="insufficient"):
        submit(node, T0 + 303_000, undelegate(10 * TRX))
    submit(node, T0 + 303_000, delegate(1 * TRX, lock=True))  # lock_period 0 = 86400 blocks
    assert records(node)[0]["expire_time_for_energy"] == T0 + 300_000 + 86_400 * 3000
    assert records(node)[0]["ENERGY"] == 16 * TRX


def test_withdraw_exactly_at_the_boundary_uses_the_parent_time() -> None:
    node = make_node({A: {"frozenV2": {"BANDWIDTH": 20 * TRX}}}, delay_seconds=60)
    unfreeze = {"type": "UnfreezeBalanceV2Contract", "owner_address": A, "unfreeze_balance": 5 * TRX}
    withdraw = {"type": "WithdrawExpireUnfreezeContract", "owner_address": A}
    submit(node, T0, unfreeze)  # now T0-3000: the lot expires T0+57000
    assert state(node)["unfrozenV2"] == [
        {"type": "BANDWIDTH", "unfreeze_amount": 5 * TRX, "unfreeze_expire_time": T0 + 57_000}
    ]
    # The block's own time (T0+57000) would mature the lot; its parent's (T0) does not.
    with pytest.raises(Rejected, match="no unFreeze balance"):
        submit(node, T0 + 57_000, withdraw)
    submit(node, T0 + 57_000)
    assert state(node)["withdrawable"] == 5 * TRX  # a withdraw in the next block gets it
    (info,) = submit(node, T0 + 60_000, withdraw)  # now T0+57000 == the expire time: matured
    assert info.withdraw_expire_amount == 5 * TRX
    assert state(node)["unfrozenV2"] == [] and state(node)["frozenV2"]["BANDWIDTH"] == 15 * TRX


def test_cancel_all_with_matured_and_pending_lots() -> None:
    opening = {
        A: {
            "frozenV2": {"ENERGY": 30 * TRX, "BANDWIDTH": 10 * TRX, "TRON_POWER": 4 * TRX},
            "unfrozenV2": [{"type": "ENERGY", "unfreeze_amount": 2 * TRX, "expire_in_ms": -1000}],
        }
    }
    node = make_node(opening, delay_seconds=60)

    def unfreeze(resource: str, amount: int) -> dict[str, Any]:
        return {
            "type": "UnfreezeBalanceV2Contract",
            "owner_address": A,
            "resource": resource,
            "unfreeze_balance": amount,
        }

    (info,) = submit(node, T0, unfreeze("ENERGY", 3 * TRX))  # auto-withdraws the matured 2 TRX
    assert info.withdraw_expire_amount == 2 * TRX
    submit(node, T0 + 3000, unfreeze("BANDWIDTH", 1 * TRX))  # expires T0+60000
    submit(node, T0 + 6000, unfreeze("TRON_POWER", 4 * TRX))  # expires T0+63000
    submit(node, T0 + 57_000)
    (info,) = submit(node, T0 + 60_000, {"type": "CancelAllUnfreezeV2Contract", "owner_address": A})
    # now T0+57000: the ENERGY lot (T0+57000) is matured and withdrawn, the others re-staked.
    assert info.withdraw_expire_amount == 3 * TRX
    assert info.cancel_unfreeze == (("ENERGY", 0), ("TRON_POWER", 4 * TRX), ("BANDWIDTH", 1 * TRX))
    now = state(node)
    assert now["frozenV2"] == {"BANDWIDTH": 10 * TRX, "ENERGY": 27 * TRX, "TRON_POWER": 4 * TRX}
    assert now["unfrozenV2"] == []


def test_v1_unfreeze_needs_opening_v1_stake() -> None:
    node = make_node({A: {"frozenV2": {"ENERGY": 5 * TRX}}})
    v1 = {"type": "UnfreezeBalanceContract", "owner_address": A, "resource": "ENERGY"}
    with pytest.raises(Rejected, match="no frozenBalance"):
        submit(node, T0, v1)
    with pytest.raises(Rejected, match="old freeze is closed"):
        submit(
            node, T0, {"type": "FreezeBalanceContract", "owner_address": A, "frozen_balance": TRX, "frozen_duration": 3}
        )

    node = make_node({A: {"frozenV1": {"ENERGY": {"frozen_balance": 7 * TRX, "expire_in_ms": 3000}}}})
    with pytest.raises(Rejected, match="not time"):
        submit(node, T0, v1)  # now T0-3000 < expire T0
    submit(node, T0)
    assert state(node)["frozenV1"] == {"ENERGY": {"frozen_balance": 7 * TRX, "expire_time": T0}}
    (info,) = submit(node, T0 + 3000, v1)  # now T0 == expire: unfreezable
    assert info.unfreeze_amount == 7 * TRX
    assert state(node)["frozenV1"] == {}


def test_generated_chain_has_no_v1_without_opening_stake_and_has_merges() -> None:
    config = parse_config(["--paused", "--seed", "9", "--ops-per-block", "6", "--unfreeze-delay-seconds", "30"], {})
    node = SimNode(config)
    node.generate_history(400)
    kinds = {tx.contract_type for block in node.store.blocks(0, 10**9) for tx in block.txs}
    assert not kinds & {"FreezeBalanceContract", "UnfreezeBalanceContract"}
    config = parse_config(
        [
            "--paused",
            "--seed",
            "9",
            "--ops-per-block",
            "6",
            "--unfreeze-delay-seconds",
            "30",
            "--opening-state",
            "random",
        ],
        {},
    )
    node = SimNode(config)
    node.generate_history(400)
    head = node.store.heights().head
    assert head is not None
    txs = [(block, tx) for block in node.store.blocks(0, 10**9) for tx in block.txs if tx.success]
    assert any(tx.contract_type == "UnfreezeBalanceContract" for _, tx in txs)
    # Lock expiries and merges happen within the run: replaying, count the delegates and
    # undelegates that found a lock whose end had passed (the merge then moves it).
    book = node._generator.opening_book.clone()
    parent = node._generator.first_parent_ms
    assert parent is not None
    merges = 0
    for block in node.store.blocks(0, 10**9):
        for tx in block.txs:
            if not (tx.success and tx.rows):
                continue
            if tx.contract_type in ("DelegateResourceContract", "UnDelegateResourceContract"):
                owner = book.peek(str(tx.value["owner_address"]))
                locked = owner.records.get((str(tx.value["receiver_address"]), True))
                if locked is not None and any(
                    locked.balance(r) and locked.expire(r) < parent for r in ("BANDWIDTH", "ENERGY")
                ):
                    merges += 1
            book.execute(tx.contract_type, tx.value, parent)
        parent = block.timestamp
    assert merges >= 5
    # The live state and the replayed view agree for every account.
    live = node.live_state()
    for address, account in live.accounts.items():
        assert node.view.account(address, head) == account
