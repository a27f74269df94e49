"""The simulator's reconciliation controls: per-client request counts, hidden transactions,
contract-made stake, and their bad inputs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, start_simulator
from ledger.chain.address import to_base58
from ledger.chain.node import TronNode
from ledger.chain.snapshot import read_opening
from ledger.positions import Position
from simulator.requests import client_label
from workers import reconcile


@pytest.fixture(scope="module")
def sim() -> Iterator[httpx.Client]:
    proc, url = start_simulator("--history-blocks", "40", "--ops-per-block", "3", "--paused", "--hide-rate", "0.2")
    client = httpx.Client(base_url=url, timeout=30)
    yield client
    client.close()
    Proc.stop(proc)


def test_requests_are_counted_per_key_and_per_address_but_not_control_routes(sim: httpx.Client) -> None:
    sim.post("/sim/requests/reset")
    for _ in range(3):
        sim.post("/wallet/getblock", json={"detail": False}, headers={"TRON-PRO-API-KEY": "k1"})
    sim.post("/walletsolidity/getblock", json={"detail": False})
    sim.get("/sim/status")
    clients = sim.get("/sim/requests").json()["clients"]
    mine = clients[client_label("k1", "")]
    assert mine["total"] == 3 and mine["today"] == 3 and mine["paths"] == {"/wallet/getblock": 3}
    assert sum(mine["per_second"].values()) == 3 and mine["max_per_second"] <= 3
    assert clients[client_label(None, "127.0.0.1")]["paths"] == {"/walletsolidity/getblock": 1}
    assert "k1" not in sim.get("/sim/requests").text  # keys are shown hashed


def test_hidden_transactions_are_out_of_blocks_and_infos_but_in_the_account_index(sim: httpx.Client) -> None:
    hidden = sim.get("/sim/hidden").json()["hidden"]
    assert hidden
    for item in hidden[:5]:
        block = sim.post("/wallet/getblockbynum", json={"num": item["block"]}).json()
        assert item["txID"] not in {tx["txID"] for tx in block.get("transactions", [])}
        infos = sim.post("/wallet/gettransactioninfobyblocknum", json={"num": item["block"]}).json()
        assert item["txID"] not in {info["id"] for info in infos}
    listed = set()
    for account in SIM_ACCOUNTS:
        page = sim.get(f"/v1/accounts/{account}/transactions", params={"limit": 200, "order_by": "block_timestamp,asc"})
        listed |= {rec["txID"] for rec in page.json()["data"]}
    assert {item["txID"] for item in hidden} <= listed


@pytest.mark.parametrize("body", [{}, {"rate": 2}, {"rate": "half"}, {"rate": True}])
def test_a_bad_hide_rate_is_refused(sim: httpx.Client, body: dict[str, object]) -> None:
    reply = sim.post("/sim/hidden", json=body)
    assert reply.status_code == 400 and "error" in reply.json()


@pytest.mark.parametrize(
    "body",
    [
        {"account": SIM_ACCOUNTS[0], "amount": 10},  # under 1 TRX: the chain refuses it
        {"account": SIM_ACCOUNTS[0], "amount": 5_000_000, "resource": "GOLD"},
        {"account": "Tnot-an-address", "amount": 5_000_000},
        {"account": SIM_ACCOUNTS[0], "amount": "5"},
    ],
)
def test_a_bad_contract_stake_is_refused_and_makes_no_block(sim: httpx.Client, body: dict[str, object]) -> None:
    head = sim.get("/sim/status").json()["head"]
    reply = sim.post("/sim/contract-stake", json=body)
    assert reply.status_code == 400 and "error" in reply.json()
    assert sim.get("/sim/status").json()["head"] == head


def test_a_contract_stake_shows_in_account_state_only(sim: httpx.Client) -> None:
    account = SIM_ACCOUNTS[1]
    before = sim.get("/sim/account-state", params={"account": account}).json()
    made = sim.post("/sim/contract-stake", json={"account": account, "resource": "ENERGY", "amount": 3_000_000})
    assert made.status_code == 200
    after = sim.get("/sim/account-state", params={"account": account}).json()
    assert after["frozenV2"]["ENERGY"] - before["frozenV2"]["ENERGY"] == 3_000_000
    block = sim.post("/wallet/getblockbynum", json={"num": made.json()["block"]}).json()
    assert "transactions" not in block  # nothing in the feed
    truth = sim.get("/sim/truth", params={"account": account}).json()["operations"]
    assert not [op for op in truth if op["block_num"] == made.json()["block"]]  # nor in the truth


def test_an_account_not_on_chain_reads_as_holding_nothing_for_both_readers(sim: httpx.Client) -> None:
    # java-tron answers getaccount with `{}` for an account it has never seen (the simulator too);
    # the state job once raised on it and retried, spending node requests each time.
    unknown = to_base58("41" + "ab" * 20)
    assert sim.post("/walletsolidity/getaccount", json={"address": unknown, "visible": True}).json() == {}
    node = TronNode(str(sim.base_url), retries=0)
    try:
        found = reconcile.solid_state(node, unknown)
        assert found is not None
        block, state = found
        assert block >= 0 and state.address == unknown
        assert set(reconcile.chain_figures(state).values()) == {0}
        # The opening snapshot reads the same reply the same way: an empty position.
        opening = read_opening(node, unknown)
        assert opening == Position(block_num=opening.block_num)
        assert reconcile.position_figures(opening) == reconcile.chain_figures(state)
        # A pool account the chain knows still parses as itself.
        known = reconcile.solid_state(node, SIM_ACCOUNTS[0])
        assert known is not None and known[1].address == SIM_ACCOUNTS[0]
    finally:
        node.close()
