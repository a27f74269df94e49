"""The simulator's account endpoints and TronGrid v1 routes over HTTP, against a real subprocess.

`scripted`: paused, solid lag 3, an opening state given as JSON, and blocks made only with
POST /sim/submit at explicit timestamps, so every figure below is known by hand. Shapes are
checked against the real samples in tests/fixtures/tron/. `busy`: a generated chain with a
random opening state and forks, where the endpoints must agree with /sim/account-state and the
TronGrid listing with the blocks.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import base58
import pytest

from simulator.addresses import derive_address, hex_to_base58
from tests.test_simulator import Sim, _start

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
T0 = 1_800_000_000_000
TRX = 1_000_000
A = hex_to_base58(derive_address("http:A"))
B = hex_to_base58(derive_address("http:B"))
C = hex_to_base58(derive_address("http:C"))
OPENING = {
    A: {
        "frozenV2": {"BANDWIDTH": 0, "ENERGY": 100 * TRX},
        "unfrozenV2": [{"type": "ENERGY", "unfreeze_amount": 2 * TRX, "expire_in_ms": 600_000}],
        "frozenV1": {"ENERGY": {"frozen_balance": 7 * TRX, "expire_in_ms": -1000}},
        "delegations": [{"to": C, "resource": "BANDWIDTH", "balance": 3 * TRX}],
    }
}


def _hex(address: str) -> str:
    return base58.b58decode_check(address).hex()


def get_status(sim: Sim, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{sim.url}{path}", timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def scripted() -> Iterator[Sim]:
    args = ["--paused", "--accounts", A, "--solid-lag", "3", "--unfreeze-delay-seconds", "60"]
    for sim in _start(*args, "--opening-state", json.dumps(OPENING)):
        submit: list[tuple[int, list[dict[str, Any]]]] = [
            (T0, [{"type": "DelegateResourceContract", "owner_address": A, "receiver_address": B, "resource": "ENERGY",
                   "balance": 10 * TRX, "lock": True, "lock_period": 2}]),
            (T0 + 3000, [{"type": "DelegateResourceContract", "owner_address": A, "receiver_address": B,
                          "resource": "ENERGY", "balance": 5 * TRX}]),
            (T0 + 6000, [{"type": "UnfreezeBalanceV2Contract", "owner_address": A, "resource": "ENERGY",
                          "unfreeze_balance": 1 * TRX}]),
            (T0 + 9000, [{"type": "UnfreezeBalanceContract", "owner_address": A, "resource": "ENERGY"}]),
            (T0 + 12000, []),
            (T0 + 15000, []),
            (T0 + 18000, []),
        ]  # fmt: skip
        for timestamp, txs in submit:
            reply = sim.post("/sim/submit", {"timestamp": timestamp, "transactions": txs})
            assert reply["timestamp"] == timestamp and len(reply["transactions"]) == len(txs)
        yield sim


def test_getaccount_shape_follows_the_real_sample(scripted: Sim) -> None:
    account = scripted.post("/wallet/getaccount", {"address": A, "visible": True})
    real = json.loads(
        (FIXTURES / "mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json").read_text()
    )
    assert [list(entry) for entry in real["frozenV2"]] == [["amount"], ["type", "amount"], ["type"]]
    # Opening 100 TRX ENERGY, 15 delegated, 1 unfrozen; BANDWIDTH 0 prints {}, TRON_POWER only its type.
    assert account["frozenV2"] == [{}, {"type": "ENERGY", "amount": 84 * TRX}, {"type": "TRON_POWER"}]
    assert account["unfrozenV2"] == [
        {"type": "ENERGY", "unfreeze_amount": 2 * TRX, "unfreeze_expire_time": T0 - 3000 + 600_000},
        {"type": "ENERGY", "unfreeze_amount": 1 * TRX, "unfreeze_expire_time": T0 + 3000 + 60_000},
    ]
    assert account["account_resource"] == {"delegated_frozenV2_balance_for_energy": 15 * TRX}
    assert account["delegated_frozenV2_balance_for_bandwidth"] == 3 * TRX
    assert "frozen" not in account  # the V1 ENERGY stake was unfrozen in block 4
    assert list(account) == [
        "address",
        "account_resource",
        "frozenV2",
        "unfrozenV2",
        "delegated_frozenV2_balance_for_bandwidth",
    ]
    assert account["address"] == A
    hex_form = scripted.get("/wallet/getaccount", address=_hex(A))
    assert hex_form["address"] == _hex(A) and hex_form["frozenV2"] == account["frozenV2"]
    assert scripted.get("/wallet/getaccount", address=A, visible="true") == account
    receiver = scripted.post("/wallet/getaccount", {"address": B, "visible": True})
    assert receiver["account_resource"] == {"acquired_delegated_frozenV2_balance_for_energy": 15 * TRX}
    assert (
        scripted.post("/wallet/getaccount", {"address": C, "visible": True})[
            "acquired_delegated_frozenV2_balance_for_bandwidth"
        ]
        == 3 * TRX
    )
    unknown = hex_to_base58(derive_address("http:nobody"))
    assert scripted.post("/wallet/getaccount", {"address": unknown, "visible": True}) == {}
    assert scripted.post("/wallet/getaccount", {"address": A}) == {}  # base58 without visible: not an address


def test_solidity_answers_at_the_solid_head(scripted: Sim) -> None:
    status = scripted.get("/sim/status")
    assert status["head"] - status["solid"] == 3  # solid = block 4 (T0+9000), where V1 was just unfrozen
    solid = scripted.post("/walletsolidity/getaccount", {"address": A, "visible": True})
    assert "frozen" not in solid and solid["frozenV2"][1]["amount"] == 84 * TRX
    before = scripted.get("/sim/account-state", account=A, block=status["solid"] - 1)
    assert before["frozenV1"] == {"ENERGY": {"frozen_balance": 7 * TRX, "expire_time": T0 - 3000 - 1000}}


def test_delegated_resources_list_unlocked_then_locked(scripted: Sim) -> None:
    reply = scripted.post("/wallet/getdelegatedresourcev2", {"fromAddress": A, "toAddress": B, "visible": True})
    real = json.loads((FIXTURES / "nile_getdelegatedresourcev2_visible_true.json").read_text())
    assert list(real) == list(reply) == ["delegatedResource"]
    # Block 2 ran at T0 (its parent's time), before the lock end T0+3000: no merge. The lock has
    # ended for any later block, but nothing merged it: it is still listed (lazily unlocked).
    assert reply["delegatedResource"] == [
        {"from": A, "to": B, "frozen_balance_for_energy": 5 * TRX},
        {"from": A, "to": B, "frozen_balance_for_energy": 10 * TRX, "expire_time_for_energy": T0 + 3000},
    ]
    hex_reply = scripted.get("/wallet/getdelegatedresourcev2", fromAddress=_hex(A), toAddress=_hex(B))
    assert hex_reply["delegatedResource"][0]["from"] == _hex(A)
    assert scripted.post("/wallet/getdelegatedresourcev2", {"fromAddress": B, "toAddress": A, "visible": True}) == {}
    index = scripted.post("/wallet/getdelegatedresourceaccountindexv2", {"value": A, "visible": True})
    real_index = json.loads((FIXTURES / "nile_getdelegatedresourceaccountindexv2_visible_true.json").read_text())
    assert set(real_index) <= {"account", "fromAccounts", "toAccounts"}
    assert index == {"account": A, "toAccounts": [C, B]}  # opening delegation first
    assert scripted.post("/wallet/getdelegatedresourceaccountindexv2", {"value": B, "visible": True}) == {
        "account": B,
        "fromAccounts": [A],
    }
    state = scripted.get("/sim/account-state", account=A)
    assert state["effective_locked"] == {"BANDWIDTH": 0, "ENERGY": 0}
    assert state["to_accounts"] == [C, B]


def test_can_delegate_max_size_and_unfreeze_counts(scripted: Sim) -> None:
    energy = scripted.post("/wallet/getcandelegatedmaxsize", {"owner_address": A, "type": 1, "visible": True})
    assert energy == {"max_size": 84 * TRX}
    assert scripted.post("/wallet/getcandelegatedmaxsize", {"owner_address": A, "type": 0, "visible": True}) == {}
    assert scripted.get("/walletsolidity/getcandelegatedmaxsize", owner_address=_hex(A), type="1") == energy
    assert scripted.post("/wallet/getavailableunfreezecount", {"owner_address": A, "visible": True}) == {"count": 30}
    can = {"owner_address": A, "visible": True, "timestamp": T0 + 63_000}
    assert scripted.post("/wallet/getcanwithdrawunfreezeamount", can) == {"amount": 1 * TRX}
    assert scripted.post("/wallet/getcanwithdrawunfreezeamount", {"owner_address": A, "visible": True}) == {}


def test_submit_rejects_what_the_chain_rejects(scripted: Sim) -> None:
    head = scripted.get("/sim/status")["head"]
    bad = {"type": "UnDelegateResourceContract", "owner_address": A, "receiver_address": C, "balance": 4 * TRX}
    status, body = post_status(scripted, "/sim/submit", {"transactions": [bad]})
    assert status == 400 and "insufficient" in json.loads(body)["error"]
    status, _ = post_status(scripted, "/sim/submit", {"transactions": [], "timestamp": T0})
    assert status == 400  # not after the head
    status, _ = post_status(scripted, "/sim/submit", {"transactions": [{"type": "TransferContract"}]})
    assert status == 400
    assert scripted.get("/sim/status")["head"] == head
    status, _ = get_status(scripted, f"/sim/account-state?account={A}&block={head + 5}")
    assert status == 404


def post_status(sim: Sim, path: str, body: Any) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{sim.url}{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_trongrid_records_and_paging(scripted: Sim) -> None:
    first = v1(scripted, f"/v1/accounts/{A}/transactions?limit=2")
    assert first["success"] is True and first["meta"]["page_size"] == 2
    assert [r["block_timestamp"] for r in first["data"]] == [T0 + 9000, T0 + 6000]  # newest first
    nxt = first["meta"]["links"]["next"]
    assert "fingerprint=" in nxt and first["meta"]["fingerprint"] in nxt
    second = v1(scripted, nxt.split(scripted.url.split("//")[1], 1)[1])
    assert [r["block_timestamp"] for r in second["data"]] == [T0 + 3000, T0]
    assert "fingerprint" not in second["meta"] and "links" not in second["meta"]
    v1_unfreeze, unfreeze = first["data"]
    sample = json.loads((FIXTURES / "mainnet_trongrid_v1_tx_unfreezebalance_v1_bandwidth_56eddcf4.json").read_text())
    assert set(sample) - {"unfreeze_amount"} <= set(v1_unfreeze)
    assert v1_unfreeze["unfreeze_amount"] == 7 * TRX and v1_unfreeze["ret"][0]["contractRet"] == "SUCCESS"
    value = v1_unfreeze["raw_data"]["contract"][0]["parameter"]["value"]
    assert (value["resource"], value["resource_type"], value["owner_address"]) == (1, "ENERGY", _hex(A))
    assert unfreeze["blockNumber"] == scripted.get("/sim/status")["head"] - 4 and "fee" in unfreeze["ret"][0]
    asc = v1(scripted, f"/v1/accounts/{_hex(A)}/transactions?order_by=block_timestamp,asc&min_timestamp={T0 + 3000}")
    assert [r["block_timestamp"] for r in asc["data"]] == [T0 + 3000, T0 + 6000, T0 + 9000]
    ranged = v1(scripted, f"/v1/accounts/{A}/transactions?max_timestamp={T0 + 3000}")
    assert [r["block_timestamp"] for r in ranged["data"]] == [T0 + 3000, T0]
    confirmed = v1(scripted, f"/v1/accounts/{A}/transactions?only_confirmed=true&only_to=true")
    assert len(confirmed["data"]) == 4  # solid head = the 4th block
    assert get_status(scripted, f"/v1/accounts/{A}/transactions?limit=201") == (400, b"")
    changed = (
        f"/v1/accounts/{A}/transactions?limit=2&order_by=block_timestamp,asc&fingerprint={first['meta']['fingerprint']}"
    )
    assert get_status(scripted, changed)[0] == 400
    receiver = v1(scripted, f"/v1/accounts/{B}/transactions")
    assert len(receiver["data"]) == 2  # delegations TO the account are listed too
    account = v1(scripted, f"/v1/accounts/{A}")
    assert account["data"][0]["address"] == _hex(A) and account["data"][0]["frozenV2"][1]["amount"] == 84 * TRX


def v1(sim: Sim, path: str) -> Any:
    request = urllib.request.Request(f"{sim.url}{path}", headers={"TRON-PRO-API-KEY": "test-key"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


# -- a generated chain ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy() -> Iterator[Sim]:
    args = ["--paused", "--seed", "11", "--history-blocks", "150", "--ops-per-block", "5", "--solid-lag", "8"]
    yield from _start(*args, "--unfreeze-delay-seconds", "30", "--opening-state", "random", "--lock-periods", "5,20")


def test_endpoints_agree_with_the_state_after_forks(busy: Sim) -> None:
    for depth in (3, 1, 5):
        busy.post("/sim/fork", {"depth": depth})
        busy.post("/sim/produce", {"count": 2})
    for account in busy.accounts:
        state = busy.get("/sim/account-state", account=account)
        chain = busy.post("/wallet/getaccount", {"address": account, "visible": True})
        frozen = {e.get("type", "BANDWIDTH"): e.get("amount", 0) for e in chain.get("frozenV2", [])}
        assert frozen == {r: state["frozenV2"][r] for r in frozen}
        resource = chain.get("account_resource", {})
        assert resource.get("delegated_frozenV2_balance_for_energy", 0) == state["delegated"]["ENERGY"]
        assert chain.get("delegated_frozenV2_balance_for_bandwidth", 0) == state["delegated"]["BANDWIDTH"]
        lots = [{"type": "BANDWIDTH", **lot} for lot in chain.get("unfrozenV2", [])]
        assert lots == state["unfrozenV2"]
        listed = []
        for receiver in state["to_accounts"]:
            body = {"fromAddress": account, "toAddress": receiver, "visible": True}
            listed += busy.post("/wallet/getdelegatedresourcev2", body).get("delegatedResource", [])
        assert sum(r.get("frozen_balance_for_energy", 0) for r in listed) == state["delegated"]["ENERGY"]
        assert sum(r.get("frozen_balance_for_bandwidth", 0) for r in listed) == state["delegated"]["BANDWIDTH"]
        assert all(value >= 0 for value in state["frozenV2"].values())
    # The TronGrid listing holds exactly the account's canonical transactions.
    account = busy.accounts[0]
    seen: list[str] = []
    path = f"/v1/accounts/{account}/transactions?limit=50"
    for _ in range(100):
        page = v1(busy, path)
        seen += [r["txID"] for r in page["data"]]
        if "links" not in page["meta"]:
            break
        path = page["meta"]["links"]["next"].split(busy.url.split("//")[1], 1)[1]
    head = busy.get("/sim/status")["head"]
    expected = []
    for number in range(head, 60_000_000 - 1, -1):
        block = busy.post("/wallet/getblockbynum", {"num": number, "visible": True})
        if not block:
            break
        for tx in reversed(block.get("transactions", [])):
            value = tx["raw_data"]["contract"][0]["parameter"]["value"]
            if account in (value.get("owner_address"), value.get("receiver_address"), value.get("to_address")):
                expected.append(tx["txID"])
    assert seen == expected and len(seen) > 50
