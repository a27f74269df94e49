"""Opening positions read from the chain (ledger.chain.snapshot), against replies built from the real
samples in tests/fixtures/tron (the public network is the one thing these tests stand in for)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.chain.account import account_state, empty_account
from ledger.chain.node import TronNode
from ledger.chain.snapshot import SnapshotError, read_opening, snapshot_new_accounts, take_snapshot
from ledger.chain.values import ChainDataError
from tests.test_persist import make_op
from web.positions import read_summary
from workers.persist import confirm_blocks, persist_operations

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
TGUSX = "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ"
BOB = "TMHy1fRsYsD4gCgTZbysd9yH9AQFQnTZQS"
LAST_OP = 1_752_739_794_000  # TGusX's latest_opration_time
DELAY_S = 14 * 86_400


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def block(n: int, *txs: Any) -> dict[str, Any]:
    header = {"number": n, "timestamp": 1_700_000_000_000 + 3000 * n, "parentHash": f"{n - 1:064x}"}
    return {"blockID": f"{n:064x}", "block_header": {"raw_data": header}, "transactions": list(txs)}


# A real transaction of the account (the sample's owner set to it): the account changed in that block.
OWN_TX = fixture("mainnet_unsigned_freezebalancev2_energy_visible_true_233666eb.json")
OWN_TX["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"] = "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ"


def fake_chain(solid: Callable[[], int], account: Any, busy: Callable[[int], bool] = lambda n: False) -> TronNode:
    """`busy(n)`: block n holds a transaction of the account."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/wallet/getblockbylimitnext":
            nums = range(body["startNum"], body["endNum"])
            return httpx.Response(200, json={"block": [block(n, *([OWN_TX] if busy(n) else [])) for n in nums]})
        if path == "/walletsolidity/getblock":
            reply: Any = {"block_header": {"raw_data": {"number": solid()}}}
        elif path == "/walletsolidity/getaccount":
            reply = account
        elif path == "/walletsolidity/getdelegatedresourceaccountindexv2":
            reply = {"account": body["value"], "toAccounts": [BOB]}
        elif path == "/walletsolidity/getdelegatedresourcev2":
            assert (body["fromAddress"], body["toAddress"]) == (TGUSX, BOB)
            # No sample of this account's receivers: one unlocked record holding its delegated total.
            reply = {"delegatedResource": [{"from": TGUSX, "to": BOB, "frozen_balance_for_energy": 3_552_150}]}
        else:
            return httpx.Response(404, text="not found")
        return httpx.Response(200, json=reply)

    return TronNode("http://chain.test", transport=httpx.MockTransport(handle), retries=0)


TGUSX_ACCOUNT = fixture("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json")


def test_mainnet_account_added_mid_history_shows_the_chains_figures(db: psycopg.Connection) -> None:
    """Added at block 1000; the first operations seen are an UnfreezeBalanceV2 (579 TRX, which also
    withdraws the account's expired 1-TRX lot) and an UnDelegateResource (1 TRX): the figures are
    the chain's, where the old running sums showed -579,000,000 and -1,000,000."""
    db.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (TGUSX,))
    node = fake_chain(lambda: 1000, TGUSX_ACCOUNT)
    opening = take_snapshot(db, node, TGUSX)
    assert opening.block_num == 1000 and opening.shortfall == {}
    ops = [
        make_op("freeze", 990, owner_address=TGUSX, amount=5),  # before the snapshot: already in it
        make_op("unfreeze", 1001, owner_address=TGUSX, amount=579_000_000, block_time_ms=LAST_OP + 3000, parent_time_ms=LAST_OP),  # noqa: E501
        make_op("withdraw_expire_unfreeze", 1001, op_index=1, owner_address=TGUSX, amount=1_000_000, contract_type="UnfreezeBalanceV2Contract", block_time_ms=LAST_OP + 3000, parent_time_ms=LAST_OP),  # noqa: E501
        make_op("undelegate", 1002, owner_address=TGUSX, receiver_address=BOB, amount=1_000_000, block_time_ms=LAST_OP + 6000, parent_time_ms=LAST_OP + 3000),  # noqa: E501
    ]  # fmt: skip
    for op in ops:
        persist_operations(db, [op], unfreeze_delay_seconds=DELAY_S)
    for solid in (None, 1001, 1002):  # the tail replayed, then partly and wholly folded
        if solid is not None:
            confirm_blocks(db, solid, unfreeze_delay_seconds=DELAY_S)
        summary = read_summary(db, TGUSX, DELAY_S * 1000)
        energy = summary.data["resources"]["ENERGY"]
        assert energy["staked"] == 3_715_447_850 - 579_000_000 + 1_000_000
        assert summary.data["resources"]["BANDWIDTH"]["staked"] == 5_041_000_000
        assert energy["delegated"]["unlocked"] == 3_552_150 - 1_000_000
        assert energy["unstaking"]["total"] == 579_000_000 and energy["withdrawable"] == 0
        assert summary.shortfall == {}
        assert summary.data["as_of_block"] == 1002


def test_a_head_that_moved_over_none_of_the_accounts_transactions_gives_the_later_block() -> None:
    heads = iter([7, 12])
    pos = read_opening(fake_chain(lambda: next(heads), TGUSX_ACCOUNT), TGUSX)
    assert pos.block_num == 12
    assert pos.staked["ENERGY"] == 3_715_447_850


def test_the_snapshot_is_read_again_when_the_account_changed_meanwhile() -> None:
    heads = iter([7, 9, 9, 9])
    pos = read_opening(fake_chain(lambda: next(heads), TGUSX_ACCOUNT, busy=lambda n: n == 8), TGUSX)
    assert pos.block_num == 9


def test_an_account_that_changes_during_every_attempt_is_an_error() -> None:
    counter = iter(range(100))
    with pytest.raises(SnapshotError):
        read_opening(fake_chain(lambda: next(counter), TGUSX_ACCOUNT, busy=lambda n: True), TGUSX, attempts=3)


def test_an_account_the_chain_does_not_know_opens_empty() -> None:
    pos = read_opening(fake_chain(lambda: 5, {}), TGUSX)
    assert pos.block_num == 5 and pos.staked["ENERGY"] == 0 and pos.pairs == {}


def test_a_node_without_the_account_api_is_asked_once_and_the_listener_goes_on(db: psycopg.Connection) -> None:
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/walletsolidity/getblock":
            return httpx.Response(200, json={"block_header": {"raw_data": {"number": 3}}})
        return httpx.Response(404, text="Not Found")

    node = TronNode("http://chain.test", transport=httpx.MockTransport(handle), retries=3)
    accounts = [TGUSX, BOB]
    assert snapshot_new_accounts(db, node, accounts) == accounts
    assert calls == ["/walletsolidity/getblock", "/walletsolidity/getaccount"]  # a 404 is not retried


def test_the_account_reader_takes_empty_as_nothing_and_refuses_another_address() -> None:
    empty = account_state({}, TGUSX)
    assert empty == empty_account(TGUSX) and empty.address == TGUSX
    assert sum(empty.frozen_v2.values()) == 0 and empty.unfrozen_v2 == ()
    assert account_state(TGUSX_ACCOUNT, TGUSX).address == TGUSX
    with pytest.raises(ChainDataError, match="answered for"):
        account_state(TGUSX_ACCOUNT, BOB)
    with pytest.raises(ChainDataError):
        account_state([], TGUSX)  # not an object: still an error, not "nothing"
