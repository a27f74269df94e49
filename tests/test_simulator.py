"""Tests for the local TRON node simulator (simulator/), run as a real subprocess over HTTP.

Two simulators are started once per module:
- `rich`: paused, 80 history blocks with many tracked stake ops, a 30 s unfreeze delay (so lots
  mature within the history) and a 10% failure rate. Its chain never changes during the tests.
- `quiet`: almost no traffic (so empty blocks exist), producing live blocks fast; the tests that
  pause, resume and produce use this one.

Addresses are checked with the `base58` package on purpose: the simulator has its own base58check,
and the two implementations must agree.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58
import pytest

from simulator.config import parse_config
from simulator.protobuf import encode_raw

ROOT = Path(__file__).resolve().parent.parent
START = 60_000_000
ADDRESS_KEYS = ("owner_address", "receiver_address", "to_address", "contract_address")
STAKE_TYPES = {
    "FreezeBalanceContract",
    "UnfreezeBalanceContract",
    "FreezeBalanceV2Contract",
    "UnfreezeBalanceV2Contract",
    "WithdrawExpireUnfreezeContract",
    "DelegateResourceContract",
    "UnDelegateResourceContract",
    "CancelAllUnfreezeV2Contract",
}


@dataclass
class Sim:
    url: str
    accounts: list[str]
    process: subprocess.Popen[str]

    def get(self, path: str, **query: Any) -> Any:
        qs = f"?{urllib.parse.urlencode(query)}" if query else ""
        with urllib.request.urlopen(f"{self.url}{path}{qs}", timeout=10) as reply:
            return json.loads(reply.read())

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())


def _start(*args: str, **options: object) -> Iterator[Sim]:
    """A simulator on a free port with the flags `args` and `options` (`history_blocks=80` for
    `--history-blocks 80`, `paused=True` for a bare `--paused`), terminated when the generator closes."""
    flags = list(args)
    for name, value in options.items():
        flags += ["--" + name.replace("_", "-")] if value is True else ["--" + name.replace("_", "-"), str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=20)
    if not lines or not lines[0].startswith("SIMULATOR READY "):
        process.kill()
        pytest.fail(f"simulator did not get ready: {lines!r}")
    _, _, url, accounts = lines[0].split()
    try:
        yield Sim(url, accounts.removeprefix("accounts=").split(","), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def rich() -> Iterator[Sim]:
    yield from _start(
        paused=True, seed=7, history_blocks=80, ops_per_block=5, failure_rate=0.1, unfreeze_delay_seconds=30
    )


@pytest.fixture(scope="module")
def quiet() -> Iterator[Sim]:
    yield from _start(seed=3, history_blocks=40, ops_per_block=0, noise_per_block=0, block_interval=0.1, solid_lag=5)


@pytest.fixture(scope="module")
def chain(rich: Sim) -> dict[str, Any]:
    """The whole rich chain, blocks and infos, in both address forms, plus its truth."""
    status = rich.get("/sim/status")
    blocks, blocks_visible = whole_chain(rich), whole_chain(rich, visible=True)
    infos = {}
    for block in blocks:
        for info in rich.post("/wallet/gettransactioninfobyblocknum", {"num": _num(block)}):
            infos[info["id"]] = info
    return {
        "status": status,
        "blocks": blocks,
        "blocks_visible": blocks_visible,
        "infos": infos,
        "truth": rich.get("/sim/truth"),
    }


def whole_chain(sim: Sim, visible: bool = False) -> list[dict[str, Any]]:
    """Every block from START to the head, 100 a request (the node's limit)."""
    head = sim.get("/sim/status")["head"]
    blocks: list[dict[str, Any]] = []
    for start in range(START, head + 1, 100):
        span = {"startNum": start, "endNum": min(start + 100, head + 1)}
        blocks += sim.post("/wallet/getblockbylimitnext", {**span, "visible": True} if visible else span)["block"]
    return blocks


def assert_linked(blocks: list[dict[str, Any]]) -> None:
    """Numbered from START on, each naming the one before as its parent, in a 3-s slot after it."""
    assert [_num(b) for b in blocks] == list(range(START, START + len(blocks)))
    for previous, block in zip(blocks, blocks[1:], strict=False):
        header = block["block_header"]["raw_data"]
        assert header["parentHash"] == previous["blockID"]
        assert header["timestamp"] - previous["block_header"]["raw_data"]["timestamp"] >= 3000
        assert header["timestamp"] % 3000 == 0


def _num(block: dict[str, Any]) -> int:
    return int(block["block_header"]["raw_data"]["number"])


def _txs(blocks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for block in blocks:
        for tx in block.get("transactions", []):
            yield block, tx


def _value(tx: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = tx["raw_data"]["contract"][0]["parameter"]["value"]
    return value


def _b58(hex_address: str) -> str:
    return base58.b58encode_check(bytes.fromhex(hex_address)).decode()


# -- chain shape ------------------------------------------------------------------------------


def test_status_and_ready_line(rich: Sim, chain: dict[str, Any]) -> None:
    status = chain["status"]
    assert status["head"] == START + 79
    assert status["solid"] == status["head"] - 19
    assert status["paused"] is True
    assert status["accounts"] == rich.accounts and len(rich.accounts) == 3
    for account in rich.accounts:
        assert base58.b58decode_check(account)[0] == 0x41


def test_blocks_link_by_parent_hash_with_3s_timestamps(chain: dict[str, Any]) -> None:
    blocks = chain["blocks"]
    assert len(blocks) == 80
    assert_linked(blocks)
    for block in blocks:
        header = block["block_header"]["raw_data"]
        assert block["blockID"][:16] == f"{header['number']:016x}" and len(block["blockID"]) == 64
        assert header["timestamp"] % 3000 == 0
        assert header["version"] == 31 and header["witness_address"].startswith("41")
        assert len(block["block_header"]["witness_signature"]) == 130
    # History is back-dated: the last history block is about now.
    assert abs(blocks[-1]["block_header"]["raw_data"]["timestamp"] / 1000 - time.time()) < 60


def test_transactions_are_real_shaped(chain: dict[str, Any]) -> None:
    seen: set[str] = set()
    for _, tx in _txs(chain["blocks"]):
        assert hashlib.sha256(bytes.fromhex(tx["raw_data_hex"])).hexdigest() == tx["txID"]
        assert tx["txID"] not in seen and tx["txID"] == tx["txID"].lower()
        seen.add(tx["txID"])
        assert tx["ret"][0]["contractRet"] in ("SUCCESS", "REVERT")
        assert all(len(sig) == 130 for sig in tx["signature"])
        contract = tx["raw_data"]["contract"]
        assert len(contract) == 1
        assert contract[0]["parameter"]["type_url"] == f"type.googleapis.com/protocol.{contract[0]['type']}"
        assert "visible" not in tx
    types = {tx["raw_data"]["contract"][0]["type"] for _, tx in _txs(chain["blocks"])}
    assert {"TransferContract", "TriggerSmartContract", "FreezeBalanceV2Contract"} <= types
    assert any("Permission_id" in tx["raw_data"]["contract"][0] for _, tx in _txs(chain["blocks"]))


def test_proto3_defaults_are_omitted(chain: dict[str, Any]) -> None:
    stake = [_value(tx) for _, tx in _txs(chain["blocks"]) if tx["raw_data"]["contract"][0]["type"] in STAKE_TYPES]
    assert stake
    for value in stake:
        assert value.get("resource") != "BANDWIDTH"
        assert value.get("lock", True) is True
        assert value.get("lock_period", 1) != 0
        assert all(v != 0 for v in value.values())
    assert any("resource" not in v for v in stake if "frozen_balance" in v)  # BANDWIDTH freezes exist
    delegations = [v for v in stake if "receiver_address" in v and "lock" in v]
    assert any("lock_period" not in v for v in delegations)  # lock=true alone: the 86400 default
    assert any("lock_period" in v for v in delegations)


def test_limitnext_is_end_exclusive_and_bounded(rich: Sim) -> None:
    reply = rich.post("/wallet/getblockbylimitnext", {"startNum": START + 3, "endNum": START + 8})
    assert [_num(b) for b in reply["block"]] == list(range(START + 3, START + 8))
    assert "Error" in rich.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": START + 101})
    assert "Error" in rich.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": START})
    assert len(rich.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": START + 100})["block"]) == 80
    head = rich.get("/sim/status")["head"]
    tail = rich.get("/wallet/getblockbylimitnext", startNum=head - 1, endNum=head + 50)
    assert [_num(b) for b in tail["block"]] == [head - 1, head]
    assert rich.post("/wallet/getblockbylimitnext", {"startNum": head + 1, "endNum": head + 10}) == {}


def test_missing_blocks_and_errors(rich: Sim, chain: dict[str, Any]) -> None:
    head = chain["status"]["head"]
    assert rich.post("/wallet/getblockbynum", {"num": head + 1}) == {}
    assert rich.get("/wallet/getblockbynum", num=START - 5) == {}
    error = rich.get("/wallet/getblockbynum", num="abc")["Error"]
    assert error.startswith("class java.lang.") and " : " in error
    assert "Error" in rich.post("/wallet/getblockbynum", {})
    with pytest.raises(urllib.error.HTTPError) as caught:
        rich.get("/wallet/nosuchendpoint")
    assert caught.value.code == 404


def test_getblock_detail_and_hash(rich: Sim, chain: dict[str, Any]) -> None:
    block = next(b for b in chain["blocks"] if "transactions" in b)
    header_only = rich.post("/wallet/getblock", {"id_or_num": str(_num(block))})
    assert header_only["blockID"] == block["blockID"] and "transactions" not in header_only
    assert rich.post("/wallet/getblock", {"id_or_num": block["blockID"], "detail": True}) == block
    assert rich.post("/wallet/getblock", {"id_or_num": "f" * 64}) == {}
    assert "Error" in rich.post("/wallet/getblock", {"id_or_num": "xyz"})
    assert _num(rich.post("/wallet/getblock", {})) == chain["status"]["head"]


def test_get_and_post_agree_and_api_key_is_ignored(rich: Sim) -> None:
    by_get = rich.get("/wallet/getblockbynum", num=START + 10, visible="true")
    by_post = rich.post("/wallet/getblockbynum", {"num": START + 10, "visible": True}, {"TRON-PRO-API-KEY": "x"})
    assert by_get == by_post
    assert rich.get("/wallet/getnowblock") == rich.post("/wallet/getnowblock")


def test_transaction_infos_are_a_bare_array(rich: Sim, chain: dict[str, Any]) -> None:
    block = next(b for b in chain["blocks"] if "transactions" in b)
    infos = rich.post("/wallet/gettransactioninfobyblocknum", {"num": _num(block)})
    assert isinstance(infos, list)
    assert [i["id"] for i in infos] == [tx["txID"] for tx in block["transactions"]]
    for info in infos:
        assert info["blockNumber"] == _num(block)
        assert info["blockTimeStamp"] == block["block_header"]["raw_data"]["timestamp"]
        assert "receipt" in info and info.get("fee", 1) > 0
    assert rich.post("/wallet/gettransactioninfobyblocknum", {"num": chain["status"]["head"] + 1}) == []


def test_empty_block_has_no_transactions_key(quiet: Sim) -> None:
    blocks = quiet.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": START + 40})["block"]
    empty = [b for b in blocks if "transactions" not in b]
    assert empty, "with no traffic configured most blocks are empty"
    assert quiet.post("/wallet/gettransactioninfobyblocknum", {"num": _num(empty[0])}) == []
    assert empty[0]["block_header"]["raw_data"]["txTrieRoot"] == "0" * 64


def test_transaction_by_id(rich: Sim, chain: dict[str, Any]) -> None:
    _, tx = next(_txs(chain["blocks"]))
    assert rich.post("/wallet/gettransactionbyid", {"value": tx["txID"]}) == tx
    assert rich.post("/wallet/gettransactioninfobyid", {"value": tx["txID"]}) == chain["infos"][tx["txID"]]
    assert rich.post("/wallet/gettransactionbyid", {"value": "0" * 64}) == {}
    assert rich.post("/wallet/gettransactioninfobyid", {"value": "0" * 64}) == {}


def test_visible_true_renders_base58(chain: dict[str, Any]) -> None:
    for plain, visible in zip(chain["blocks"], chain["blocks_visible"], strict=True):
        witness = plain["block_header"]["raw_data"]["witness_address"]
        assert visible["block_header"]["raw_data"]["witness_address"] == _b58(witness)
        for tx, vtx in zip(plain.get("transactions", []), visible.get("transactions", []), strict=True):
            assert vtx["visible"] is True
            assert vtx["txID"] == tx["txID"] and vtx["raw_data_hex"] == tx["raw_data_hex"]
            value, vvalue = _value(tx), _value(vtx)
            for key in value:
                if key in ADDRESS_KEYS:
                    assert vvalue[key] == _b58(value[key]) and vvalue[key].startswith("T")
                else:
                    assert vvalue[key] == value[key]


def test_solidity_endpoints_stop_at_solid_head(rich: Sim, chain: dict[str, Any]) -> None:
    solid = chain["status"]["solid"]
    assert _num(rich.get("/walletsolidity/getnowblock")) == solid
    assert _num(rich.post("/walletsolidity/getblockbynum", {"num": solid})) == solid
    assert rich.post("/walletsolidity/getblockbynum", {"num": solid + 1}) == {}
    span = rich.post("/walletsolidity/getblockbylimitnext", {"startNum": solid - 2, "endNum": solid + 5})
    assert [_num(b) for b in span["block"]] == [solid - 2, solid - 1, solid]
    assert rich.post("/walletsolidity/gettransactioninfobyblocknum", {"num": solid + 1}) == []
    assert isinstance(rich.post("/walletsolidity/gettransactioninfobyblocknum", {"num": solid}), list)


# -- ground truth -----------------------------------------------------------------------------


def _expected_rows(tx: dict[str, Any], info: dict[str, Any], block: dict[str, Any]) -> list[dict[str, Any]]:
    """The decomposition rule of the brief, written again here from the rendered JSON."""
    kind = tx["raw_data"]["contract"][0]["type"]
    value = _value(tx)
    # A failed transaction's info carries no amounts, so the rule needs no special case for it.
    resource = value.get("resource", "BANDWIDTH")
    withdrawn = info.get("withdraw_expire_amount", 0)
    rows: list[tuple[str, str | None, int]] = []
    receiver, lock, period = value.get("receiver_address"), False, 0
    if kind in ("FreezeBalanceV2Contract", "FreezeBalanceContract"):
        rows = [("freeze", resource, value.get("frozen_balance", 0))]
    elif kind == "UnfreezeBalanceV2Contract":
        rows = [("unfreeze", resource, value.get("unfreeze_balance", 0))]
        rows += [("withdraw_expire_unfreeze", None, withdrawn)] if withdrawn > 0 else []
    elif kind == "UnfreezeBalanceContract":
        rows = [("unfreeze", resource, info.get("unfreeze_amount", 0))]
    elif kind == "WithdrawExpireUnfreezeContract":
        rows = [("withdraw_expire_unfreeze", None, withdrawn)]
    elif kind == "CancelAllUnfreezeV2Contract":
        cancelled = {item["key"]: item["value"] for item in info.get("cancel_unfreezeV2_amount", [])}
        order = ("BANDWIDTH", "ENERGY", "TRON_POWER")
        rows = [("cancel_all_unfreeze", r, cancelled[r]) for r in order if cancelled.get(r)]
        rows += [("withdraw_expire_unfreeze", None, withdrawn)] if withdrawn > 0 else []
        rows = rows or [("cancel_all_unfreeze", None, 0)]
    elif kind == "DelegateResourceContract":
        lock = value.get("lock", False)
        period = value.get("lock_period", 0) or (86400 if lock else 0)
        rows = [("delegate", resource, value["balance"])]
    elif kind == "UnDelegateResourceContract":
        rows = [("undelegate", resource, value["balance"])]
    return [
        {
            "tx_id": tx["txID"],
            "op_index": index,
            "block_num": _num(block),
            "block_time_ms": block["block_header"]["raw_data"]["timestamp"],
            "kind": row_kind,
            "contract_type": kind,
            "owner_address": _b58(value["owner_address"]),
            "receiver_address": _b58(receiver) if receiver else None,
            "resource": row_resource,
            "amount": amount,
            "lock": lock,
            "lock_period": period,
        }
        for index, (row_kind, row_resource, amount) in enumerate(rows)
    ]


def test_truth_matches_blocks_and_infos(chain: dict[str, Any], rich: Sim) -> None:
    tracked = set(rich.accounts)
    solid = chain["status"]["solid"]
    expected: list[dict[str, Any]] = []
    for block, tx in _txs(chain["blocks"]):
        if tx["raw_data"]["contract"][0]["type"] not in STAKE_TYPES:
            continue
        for row in _expected_rows(tx, chain["infos"][tx["txID"]], block):
            if row["owner_address"] in tracked or row["receiver_address"] in tracked:
                ok = tx["ret"][0]["contractRet"] == "SUCCESS"
                row["status"] = ("confirmed" if row["block_num"] <= solid else "pending") if ok else "failed"
                expected.append(row)
    truth = chain["truth"]
    assert truth["head"] == chain["status"]["head"] and truth["solid"] == solid
    assert truth["operations"] == expected
    kinds = {row["kind"] for row in expected}
    assert {"freeze", "unfreeze", "delegate", "undelegate", "withdraw_expire_unfreeze"} <= kinds
    assert {row["status"] for row in expected} == {"confirmed", "pending", "failed"}
    # Delegations TO a tracked account from an untracked one, and stake by untracked accounts.
    assert any(r["owner_address"] not in tracked and r["receiver_address"] in tracked for r in expected)
    owners = {
        _b58(_value(tx)["owner_address"])
        for _, tx in _txs(chain["blocks"])
        if tx["raw_data"]["contract"][0]["type"] in STAKE_TYPES
    }
    assert owners - tracked


def test_truth_per_account(rich: Sim, chain: dict[str, Any]) -> None:
    account = rich.accounts[0]
    rows = rich.get("/sim/truth", account=account)["operations"]
    assert rows and all(account in (r["owner_address"], r["receiver_address"]) for r in rows)
    everything = chain["truth"]["operations"]
    assert rows == [r for r in everything if account in (r["owner_address"], r["receiver_address"])]


def test_truth_state_stays_valid(chain: dict[str, Any]) -> None:
    """Replaying the successful V2 rows never takes an owner's available stake below zero,
    and never undelegates more than was delegated: the generator only makes valid operations."""
    available: dict[tuple[str, str], int] = {}
    delegated: dict[tuple[str, str | None, str], int] = {}
    sign = {"freeze": 1, "unfreeze": -1, "delegate": -1, "undelegate": 1, "cancel_all_unfreeze": 1}
    for row in chain["truth"]["operations"]:
        if row["status"] == "failed" or row["contract_type"] in ("FreezeBalanceContract", "UnfreezeBalanceContract"):
            continue
        if row["kind"] in sign and row["resource"]:
            key = (row["owner_address"], row["resource"])
            available[key] = available.get(key, 0) + sign[row["kind"]] * row["amount"]
            # Delegations received from untracked owners are listed but their stake is not.
            if row["owner_address"] in chain["status"]["accounts"]:
                assert available[key] >= 0, row
        if row["kind"] in ("delegate", "undelegate"):
            pair = (row["owner_address"], row["receiver_address"], row["resource"])
            delegated[pair] = delegated.get(pair, 0) + (row["amount"] if row["kind"] == "delegate" else -row["amount"])
            if row["owner_address"] in chain["status"]["accounts"]:
                assert delegated[pair] >= 0, row


def test_failed_transactions_revert_without_amounts(chain: dict[str, Any]) -> None:
    failed = [tx for _, tx in _txs(chain["blocks"]) if tx["ret"][0]["contractRet"] != "SUCCESS"]
    stake_failed = [tx for tx in failed if tx["raw_data"]["contract"][0]["type"] in STAKE_TYPES]
    assert stake_failed
    for tx in stake_failed:
        assert tx["ret"][0]["contractRet"] == "REVERT"
        info = chain["infos"][tx["txID"]]
        assert info["result"] == "FAILED"
        for key in ("withdraw_expire_amount", "cancel_unfreezeV2_amount", "unfreeze_amount"):
            assert key not in info


def test_cancel_all_lists_all_three_resources(chain: dict[str, Any]) -> None:
    for _, tx in _txs(chain["blocks"]):
        info = chain["infos"][tx["txID"]]
        if "cancel_unfreezeV2_amount" in info:
            assert [e["key"] for e in info["cancel_unfreezeV2_amount"]] == ["ENERGY", "TRON_POWER", "BANDWIDTH"]


# -- control ----------------------------------------------------------------------------------


def test_live_production_pause_and_produce(quiet: Sim) -> None:
    first = quiet.get("/sim/status")["head"]
    deadline = time.monotonic() + 5
    while quiet.get("/sim/status")["head"] < first + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert quiet.get("/sim/status")["head"] >= first + 3, "live blocks every 0.1 s"
    assert quiet.post("/sim/pause") == {"paused": True}
    paused_head = quiet.get("/sim/status")["head"]
    time.sleep(0.4)
    status = quiet.get("/sim/status")
    assert status["paused"] is True and status["head"] == paused_head
    produced = quiet.post("/sim/produce", {"count": 5})
    assert produced["head"] == paused_head + 5 and produced["solid"] == paused_head
    # Live timestamps: strictly increasing by >= 3000, multiples of 3000, even when faster than 3 s.
    blocks = quiet.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": START + 100})["block"]
    stamps = [b["block_header"]["raw_data"]["timestamp"] for b in blocks]
    assert all(b - a >= 3000 and b % 3000 == 0 for a, b in zip(stamps, stamps[1:], strict=False))
    assert quiet.post("/sim/resume") == {"paused": False}
    time.sleep(0.3)
    assert quiet.get("/sim/status")["head"] > paused_head + 5
    with pytest.raises(urllib.error.HTTPError) as caught:
        quiet.post("/sim/produce", {"count": 0})
    assert caught.value.code == 400


def test_keep_alive_with_exact_content_length(rich: Sim) -> None:
    host, port = rich.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for num in (START, START + 1, START + 2):
            connection.request("POST", "/wallet/getblockbynum", body=json.dumps({"num": num}))
            reply = connection.getresponse()
            body = reply.read()
            assert reply.status == 200 and int(reply.headers["Content-Length"]) == len(body)
            assert _num(json.loads(body)) == num
    finally:
        connection.close()


# -- pieces that need no server ---------------------------------------------------------------


def test_protobuf_encoding_matches_a_real_transaction() -> None:
    """privatenet_walletcli_gettransactionbyid_undelegateresource_bandwidth_omitted_feb33479.json"""
    raw = encode_raw(
        contract_type="UnDelegateResourceContract",
        value={
            "owner_address": "4159e3741a68ec3e1ebba80ad809d5ccd31674236e",
            "balance": 1000000,
            "receiver_address": "419a9afe56e155ef0ff3f680d00ecf19deff60bdca",
        },
        permission_id=0,
        ref_block_bytes="0000",
        ref_block_hash="19b59068c6058ff4",
        expiration=1671120342283,
        timestamp=1671098742280,
        fee_limit=None,
    )
    assert raw.hex() == (
        "0a020000220819b59068c6058ff4408b9aa3b4d1305a71083a126d0a37747970652e676f6f676c65617069732e636f6d2f"
        "70726f746f636f6c2e556e44656c65676174655265736f75726365436f6e747261637412320a154159e3741a68ec3e1ebb"
        "a80ad809d5ccd31674236e18c0843d2215419a9afe56e155ef0ff3f680d00ecf19deff60bdca7088ecfca9d130"
    )
    assert hashlib.sha256(raw).hexdigest() == "feb334794cf361fd351728026ccf7319e6ae90eba622b9eb53c626cdcae4965c"


def test_config_reads_environment_and_flags_win() -> None:
    env = {"SIM_BLOCK_INTERVAL": "0.5", "SIM_PAUSED": "1", "SIM_PORT": "9999", "SIM_NUM_ACCOUNTS": "2"}
    config = parse_config([], env)
    assert (config.block_interval, config.paused, config.port, len(config.accounts)) == (0.5, True, 9999, 2)
    assert parse_config(["--port", "1234", "--paused", "false"], env).port == 1234
    assert parse_config(["--paused"], {}).paused is True
    account = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
    assert parse_config(["--accounts", account], env).accounts == (account,)
    with pytest.raises(SystemExit):
        parse_config(["--accounts", "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHrX"], {})  # bad checksum


def test_fork_seam_replaces_unsolidified_blocks() -> None:
    from simulator.node import SimNode

    node = SimNode(parse_config(["--history-blocks", "30", "--paused", "--solid-lag", "5"], {}))
    node.generate_history(30)
    head = node.store.heights().head
    assert head is not None
    dropped = node.store.block(head)
    assert dropped is not None
    node.store.replace_from(head - 1, [])
    assert node.store.heights().head == head - 2
    assert all(node.store.tx(tx.tx_id) is None for tx in dropped.txs)
    replacement = node.produce(2)
    assert replacement is not None and replacement.number == head and replacement.block_id != dropped.block_id
    with pytest.raises(ValueError):
        node.store.replace_from(START + 1, [])  # solidified blocks are final
