"""Tests for the chain parser (ledger.chain.parser), addresses and the account/trigger readers.

Part 1 walks every file in tests/fixtures/tron/ (real chain samples; SOURCES.md there says where
each came from) against an explicit table, so a new fixture fails until someone classifies it.
Part 2 checks each parsing rule on real fixture data, edited where a rule needs a variant (the
edits keep the fixtures' shapes).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.address import AddressError, is_address, to_base58, to_hex
from ledger.chain.parser import (
    AccountState,
    BlockTrigger,
    ChainDataError,
    DelegatedResource,
    MissingTransactionInfo,
    NodeError,
    TransactionTrigger,
    UnfreezeLot,
    check_node_reply,
    needs_transaction_info,
    parse_account,
    parse_block,
    parse_delegated_resources,
    parse_transaction,
    parse_transaction_infos,
    parse_trigger,
    parse_trongrid_record,
)
from ledger.domain import DEFAULT_LOCK_PERIOD_BLOCKS, Operation

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "tron"

# File names used by more than one test.
BLOCK_UNDELEGATE = "mainnet_getblockbynum_67674988_trimmed_undelegateresource.json"
BLOCK_CANCEL = "privatenet_getblockbynum_165_cancelallunfreezev2.json"
INFO_CANCEL = "privatenet_gettransactioninfobyid_cancelallunfreezev2.json"
INFOS_CHAINSTORAGE = "mainnet_gettransactioninfobyblocknum_fixture_chainstorage.json"
DOC_ERROR = (
    "privatenet_walletcli_gettransactionbyid_cancelallunfreezev2_DOC_ERROR_mismatched_raw_data_hex_e5763ab8.json"
)
TX_FREEZE_BW = "privatenet_walletcli_gettransactionbyid_freezebalancev2_bandwidth_omitted_82244829.json"
TX_UNFREEZE_V2 = "privatenet_walletcli_gettransactionbyid_unfreezebalancev2_bandwidth_omitted_dcfea1d9.json"
TX_UNDELEGATE = "privatenet_walletcli_gettransactionbyid_undelegateresource_bandwidth_omitted_feb33479.json"
TX_WITHDRAW = "privatenet_walletcli_gettransactionbyid_withdrawexpireunfreeze_e5763ab8.json"
TX_UNFREEZE_V1 = "mainnet_unsigned_unfreezebalance_v1_bandwidth_omitted_3520e092.json"
TX_DELEGATE_LOCK = "nile_unsigned_delegateresource_energy_lock_period_visible_true_beb147f9.json"
TG_FREEZE_V1 = "mainnet_trongrid_v1_tx_freezebalance_v1_energy_4e5a4a09.json"
TG_FREEZE_V2 = "mainnet_trongrid_v1_tx_freezebalancev2_energy_37a8a1cf.json"
TG_UNFREEZE_V1 = "mainnet_trongrid_v1_tx_unfreezebalance_v1_bandwidth_56eddcf4.json"

# Base58 forms of the fixtures' hex addresses.
TL24 = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"  # 416e3b44..., TronGrid's own URL for this account
UNDELEGATE_OWNER = "TAXJRgHa4eizT1BwNTgv7mqt1idjtg5xUU"  # 410611d6...
UNDELEGATE_RECEIVER = "TGw4uoJpLYVk6NxS9Z8U8m7Dv2sVwTKHGv"  # 414c614b...
CANCEL_OWNER = "TW7UGGx4xhcxBSu2LKBYxR5hz7GPKXsZbP"  # 41dcf295...
WALLETCLI_OWNER = "TJAVcszse667FmSNCwU2fm6DmfM5D4AyDh"  # 4159e374...
WALLETCLI_RECEIVER = "TQ4gjjpAjLNnE67UFbmK5wVt5fzLfyEVs3"  # 419a9afe...
NILE_OWNER = "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH"
NILE_RECEIVER = "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK"
TESTNET_OWNER = "TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM"
TESTNET_RECEIVER = "TZ4UXDV5ZhNW7fb2AMSbgfAEZ7hWsnYS2g"

UNDELEGATE_TX_ID = "f5365847bff6e48d0c6bc23eee276343d2987efd9876c3c1bf597225e3d69991"
CANCEL_TX_ID = "db8667ffea27109131fd5c113abcadd535c896590814a50dbf9eda253a8d19da"


def load(name: str) -> Any:
    """A fresh copy of a fixture, so tests can edit it."""
    return json.loads((FIXTURES / name).read_text())


def row(kind: str, resource: str | None, amount: int, owner: str, **extra: Any) -> dict[str, Any]:
    """The expected fields of one operation; unspecified delegation fields take their defaults."""
    expected = {"kind": kind, "resource": resource, "amount": amount, "owner_address": owner}
    expected.setdefault("receiver_address", None)
    expected.update({"lock": False, "lock_period": 0})
    expected.update(extra)
    return expected


def assert_ops(ops: list[Operation], expected: list[dict[str, Any]]) -> None:
    got = [{key: getattr(op, key) for key in want} for op, want in zip(ops, expected, strict=False)]
    assert got == expected
    assert len(ops) == len(expected), ops
    for tx_id in {op.tx_id for op in ops}:  # op_index counts the rows of each transaction
        assert [op.op_index for op in ops if op.tx_id == tx_id] == list(range(sum(op.tx_id == tx_id for op in ops)))
    for op in ops:
        op.validate()
        assert Operation.from_message(op.to_message()) == op


def one_tx(tx: dict[str, Any], info: dict[str, Any] | None = None, status: str = "pending") -> list[Operation]:
    return parse_transaction(
        tx, block_num=165, block_id="ab" * 32, block_time_ms=1790865510000, tx_index=0, info=info, status=status
    )


def block_of(*txs: Any) -> dict[str, Any]:
    """Block 165's header around the given transactions."""
    block: dict[str, Any] = load(BLOCK_CANCEL)
    block["transactions"] = list(txs)
    return block


def info_for(tx: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A TransactionInfo shaped like the private-net one (block 165), for `tx`."""
    info: dict[str, Any] = load(INFO_CANCEL)
    del info["cancel_unfreezeV2_amount"]
    info["id"] = tx["txID"]
    info.update(fields)
    return info


def value_of(tx: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = tx["raw_data"]["contract"][0]["parameter"]["value"]
    return value


def with_computed_txid(unsigned: dict[str, Any]) -> dict[str, Any]:
    # wallet-cli's unsigned JSON has no txID; it is sha256 of the raw_data bytes (java-tron Util.java).
    tx = dict(unsigned)
    tx["txID"] = hashlib.sha256(bytes.fromhex(unsigned["raw_data_hex"])).hexdigest()
    return tx


# --- part 1: every fixture file ---------------------------------------------------------------------


def check_block(name: str, data: Any, expected: dict[str, Any]) -> None:
    reply = load(expected["infos"])
    infos = parse_transaction_infos(reply if isinstance(reply, list) else [reply])
    assert needs_transaction_info(data, None) is expected["needs_info"]
    if expected["needs_info"]:
        with pytest.raises(MissingTransactionInfo):
            parse_block(data)
    parsed = parse_block(data, infos=infos)
    header = data["block_header"]["raw_data"]
    assert (parsed.number, parsed.block_id, parsed.timestamp_ms) == expected["header"]
    assert parsed.parent_hash == header["parentHash"]
    assert parsed.issues == []
    assert_ops(parsed.operations, expected["ops"])
    for op in parsed.operations:
        assert (op.block_num, op.block_id, op.block_time_ms) == expected["header"]
        assert op.block_time_ms != data["transactions"][op.tx_index]["raw_data"]["timestamp"]
    assert [(op.tx_id, op.tx_index) for op in parsed.operations] == expected["tx"]


def check_tx_infos(name: str, data: Any, expected: set[str]) -> None:
    assert set(parse_transaction_infos(data)) == expected


def check_tx_info(name: str, data: Any, expected: tuple[str, list[dict[str, Any]]]) -> None:
    paired, rows = expected
    infos = parse_transaction_infos([data])
    assert list(infos) == [data["id"]]
    tx = load(paired)
    if "transactions" in tx:  # paired with a block: take its transaction with this id
        tx = next(t for t in tx["transactions"] if t["txID"] == data["id"])
    assert tx["txID"] == data["id"]
    ops = parse_transaction(
        tx,
        block_num=data["blockNumber"],
        block_id="",
        block_time_ms=data["blockTimeStamp"],
        tx_index=0,
        info=infos[data["id"]],
        status="confirmed",
    )
    assert_ops(ops, rows)
    if "blockNumber" in tx:  # a TronGrid record carries the same amounts at its top level
        assert [op.amount for op in parse_trongrid_record(tx)] == [r["amount"] for r in rows]


def check_trongrid_tx(name: str, data: Any, expected: dict[str, Any]) -> None:
    ops = parse_trongrid_record(data)
    assert_ops(ops, expected["ops"])
    for op in ops:
        assert (op.block_num, op.block_time_ms, op.block_id, op.tx_index) == (*expected["block"], "", 0)
        assert op.tx_id == data["txID"]
        assert op.status == "pending" and op.contract_ret == "SUCCESS"


def check_tx(name: str, data: Any, expected: dict[str, Any]) -> None:
    ops = one_tx(data)
    assert_ops(ops, expected["ops"])
    for op in ops:
        assert op.tx_id == data["txID"] and op.contract_ret == expected["contract_ret"]
        assert op.status == "pending"


def check_walletcli_wrapper(name: str, data: Any, expected: dict[str, Any]) -> None:
    tx = with_computed_txid(data["wallet_cli_json_unsigned"])
    ops = one_tx(tx)
    assert_ops(ops, expected["ops"])
    assert all(op.contract_ret is None for op in ops)  # unsigned: no `ret`, so unknown


def check_malformed_tx(name: str, data: Any, expected: str) -> None:
    with pytest.raises(ChainDataError, match=expected):
        one_tx(data)
    # Inside a block it becomes an issue naming block and txID, and the next transaction still parses.
    good = load(TX_UNDELEGATE)
    parsed = parse_block(block_of(data, good))
    assert [(i.block_num, i.tx_id) for i in parsed.issues] == [(165, data["txID"])]
    assert expected in parsed.issues[0].message
    assert [(op.tx_id, op.tx_index, op.kind) for op in parsed.operations] == [(good["txID"], 1, "undelegate")]


def check_account(name: str, data: Any, expected: AccountState) -> None:
    item = data["data"][0] if "data" in data else data  # TronGrid wraps items in an envelope
    assert parse_account(item) == expected


def check_delegated(name: str, data: Any, expected: list[DelegatedResource]) -> None:
    assert parse_delegated_resources(data) == expected


def check_trigger(name: str, data: Any, expected: BlockTrigger | TransactionTrigger) -> None:
    assert parse_trigger(data) == expected


def check_not_parsed(name: str, data: Any, expected: set[str]) -> None:
    # Replies the parser has no reader for yet; make sure they are what the table says they are.
    assert check_node_reply(data) is data
    assert expected <= set(data)


def check_doc(name: str, data: Any, expected: None) -> None:
    assert isinstance(data, str) and "fixture sources" in data.lower()


CHECKS: dict[str, Callable[[str, Any, Any], None]] = {
    "block": check_block,
    "tx_infos": check_tx_infos,
    "tx_info": check_tx_info,
    "trongrid_tx": check_trongrid_tx,
    "tx": check_tx,
    "walletcli_wrapper": check_walletcli_wrapper,
    "malformed_tx": check_malformed_tx,
    "account": check_account,
    "delegated_resources": check_delegated,
    "trigger": check_trigger,
    "not_parsed": check_not_parsed,
    "doc": check_doc,
}

_ZERO = {"BANDWIDTH": 0, "ENERGY": 0, "TRON_POWER": 0}

FIXTURE_TABLE: dict[str, tuple[str, Any]] = {
    "SOURCES.md": ("doc", None),
    # Blocks: header, whether infos are needed, the ops, and (tx_id, tx_index) of each op.
    BLOCK_UNDELEGATE: (
        "block",
        {
            "infos": INFOS_CHAINSTORAGE,  # stitched from another block, and not needed: UnDelegate
            "needs_info": False,
            "header": (67674988, "000000000408a36cd32a8e674045e96f895b7708b85fa5141f3c8fd92eb497a8", 1733675346000),
            # The TransferContract (index 0, with an edited 0x txID) is skipped silently.
            "ops": [
                row(
                    "undelegate",
                    "BANDWIDTH",
                    248167143,
                    UNDELEGATE_OWNER,
                    receiver_address=UNDELEGATE_RECEIVER,
                    contract_type="UnDelegateResourceContract",
                    contract_ret="SUCCESS",
                    status="pending",
                )
            ],
            "tx": [(UNDELEGATE_TX_ID, 1)],
        },
    ),
    BLOCK_CANCEL: (
        "block",
        {
            "infos": INFO_CANCEL,
            "needs_info": True,
            "header": (165, "00000000000000a568a725352ccd7fbad4e65f56ed11d420a505c21f2230145d", 1790865510000),
            # Only ENERGY is non-zero in cancel_unfreezeV2_amount; no withdraw_expire_amount.
            "ops": [
                row(
                    "cancel_all_unfreeze", "ENERGY", 10000000, CANCEL_OWNER, contract_type="CancelAllUnfreezeV2Contract"
                )
            ],
            "tx": [(CANCEL_TX_ID, 0)],
        },
    ),
    # TransactionInfo arrays and single infos (paired with the transaction they belong to).
    INFOS_CHAINSTORAGE: (
        "tx_infos",
        {
            "baa42c87b7c764c548fa37e61e9764415fd4a79d7e073d4f92a456698002016b",
            "f5365847bff6e48d0c6bc23eee276343d2987efd9876c3c1bf597225e3d69991",
        },
    ),
    INFO_CANCEL: (
        "tx_info",
        (BLOCK_CANCEL, [row("cancel_all_unfreeze", "ENERGY", 10000000, CANCEL_OWNER)]),
    ),
    "mainnet_gettransactioninfobyid_37a8a1cf.json": (
        "tx_info",
        (TG_FREEZE_V2, [row("freeze", "ENERGY", 1000000, TL24)]),
    ),
    "mainnet_gettransactioninfobyid_422f92d9.json": (
        "tx_info",
        ("mainnet_trongrid_v1_tx_freezebalancev2_energy_422f92d9.json", [row("freeze", "ENERGY", 50000000, TL24)]),
    ),
    "mainnet_gettransactioninfobyid_5364d831.json": (
        "tx_info",
        ("mainnet_trongrid_v1_tx_withdrawbalance_reward_5364d831.json", []),  # voting reward: not a stake op
    ),
    "mainnet_gettransactioninfobyid_56eddcf4.json": (
        "tx_info",
        (TG_UNFREEZE_V1, [row("unfreeze", "BANDWIDTH", 5000000, TL24, contract_type="UnfreezeBalanceContract")]),
    ),
    # TronGrid v1 transaction records: (blockNumber, block_timestamp) and ops.
    TG_FREEZE_V1: (
        "trongrid_tx",
        {
            "block": (46611467, 1670422413000),
            "ops": [row("freeze", "ENERGY", 1000000, TL24, contract_type="FreezeBalanceContract")],  # resource: 1
        },
    ),
    TG_FREEZE_V2: (
        "trongrid_tx",
        {"block": (65918471, 1728404118000), "ops": [row("freeze", "ENERGY", 1000000, TL24)]},
    ),
    "mainnet_trongrid_v1_tx_freezebalancev2_energy_422f92d9.json": (
        "trongrid_tx",
        {"block": (62089632, 1716912333000), "ops": [row("freeze", "ENERGY", 50000000, TL24)]},
    ),
    TG_UNFREEZE_V1: (
        "trongrid_tx",
        {"block": (69226727, 1738331928000), "ops": [row("unfreeze", "BANDWIDTH", 5000000, TL24)]},  # resource: 0
    ),
    "mainnet_trongrid_v1_tx_withdrawbalance_reward_5364d831.json": (
        "trongrid_tx",
        {"block": (65918456, 1728404073000), "ops": []},
    ),
    # Node transactions (unsigned build replies and signed gettransactionbyid), parsed without info.
    "mainnet_unsigned_freezebalancev2_bandwidth_omitted_821e65f6.json": (
        "tx",
        {"contract_ret": None, "ops": [row("freeze", "BANDWIDTH", 23000000, "TXRqZPuvcZMGwzZyJpekueL6nPa6uPPNTW")]},
    ),
    "mainnet_unsigned_freezebalancev2_energy_bcce7b5d.json": (
        "tx",
        {"contract_ret": None, "ops": [row("freeze", "ENERGY", 3500000000, "TSyk1pyZawUgYQ2cCuWovrKUpffetKxqJb")]},
    ),
    "mainnet_unsigned_freezebalancev2_energy_visible_true_233666eb.json": (
        "tx",
        {"contract_ret": None, "ops": [row("freeze", "ENERGY", 1000000, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")]},
    ),
    TX_UNFREEZE_V1: (
        "tx",  # the amount lives only in TransactionInfo, which an unsigned tx has not got: 0
        {"contract_ret": None, "ops": [row("unfreeze", "BANDWIDTH", 0, "TCfiyD8KTX61qvg7T6XZeZhNRRPPD5bwtz")]},
    ),
    "mainnet_unsigned_unfreezebalancev2_bandwidth_omitted_549a0a77.json": (
        "tx",
        {
            "contract_ret": None,
            "ops": [row("unfreeze", "BANDWIDTH", 10680000000, "TQFLexwUKagmfRQmGPqJRkrHQkF1JrGPYJ")],
        },
    ),
    "mainnet_unsigned_withdrawexpireunfreeze_0145ec8e.json": (
        "tx",
        {"contract_ret": None, "ops": [row("withdraw_expire_unfreeze", None, 0, "TMm7HemvJCFbxx9oe2cQcyePjfDjc5JDDc")]},
    ),
    TX_DELEGATE_LOCK: (
        "tx",
        {
            "contract_ret": None,
            "ops": [
                row(
                    "delegate",
                    "ENERGY",
                    5000000,
                    NILE_OWNER,
                    receiver_address=NILE_RECEIVER,
                    lock=True,
                    lock_period=28800,
                )
            ],
        },
    ),
    "nile_unsigned_freezebalancev2_energy_visible_true_8a2b433a.json": (
        "tx",
        {"contract_ret": None, "ops": [row("freeze", "ENERGY", 10000000, NILE_OWNER)]},
    ),
    "nile_unsigned_unfreezebalancev2_energy_visible_true_ed52480c.json": (
        "tx",
        {"contract_ret": None, "ops": [row("unfreeze", "ENERGY", 1000000, NILE_OWNER)]},
    ),
    TX_FREEZE_BW: (
        "tx",
        {"contract_ret": "SUCCESS", "ops": [row("freeze", "BANDWIDTH", 1000000000000000, WALLETCLI_OWNER)]},
    ),
    TX_UNDELEGATE: (
        "tx",
        {
            "contract_ret": "SUCCESS",
            "ops": [row("undelegate", "BANDWIDTH", 1000000, WALLETCLI_OWNER, receiver_address=WALLETCLI_RECEIVER)],
        },
    ),
    TX_UNFREEZE_V2: (
        "tx",
        {"contract_ret": "SUCCESS", "ops": [row("unfreeze", "BANDWIDTH", 9000000, WALLETCLI_OWNER)]},
    ),
    TX_WITHDRAW: (
        "tx",
        {"contract_ret": "SUCCESS", "ops": [row("withdraw_expire_unfreeze", None, 0, WALLETCLI_OWNER)]},
    ),
    DOC_ERROR: ("malformed_tx", "type_url"),
    # wallet-cli 2023 wrappers (visible base58, no txID: computed from raw_data_hex).
    "testnet_unknown_walletcli2023_delegateresource_energy_unlocked_visible_true_0917002d.json": (
        "walletcli_wrapper",
        {"ops": [row("delegate", "ENERGY", 1000000, TESTNET_OWNER, receiver_address=TESTNET_RECEIVER)]},
    ),
    "testnet_unknown_walletcli2023_freezebalancev2_energy_visible_true_1743aa09.json": (
        "walletcli_wrapper",
        {"ops": [row("freeze", "ENERGY", 1000000, TESTNET_OWNER)]},
    ),
    "testnet_unknown_walletcli2023_unfreezebalancev2_energy_visible_true_f9e11434.json": (
        "walletcli_wrapper",
        {"ops": [row("unfreeze", "ENERGY", 1000000, TESTNET_OWNER)]},
    ),
    # Account state.
    "mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json": (
        "account",
        AccountState(
            address="TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ",
            balance=165156556,
            frozen_v2={"BANDWIDTH": 5041000000, "ENERGY": 3715447850, "TRON_POWER": 0},
            unfrozen_v2=(UnfreezeLot("ENERGY", 1000000, 1752679197000),),
            delegated_v2={"BANDWIDTH": 0, "ENERGY": 3552150},
            acquired_delegated_v2={"BANDWIDTH": 0, "ENERGY": 0},
            frozen_v1=_ZERO,
        ),
    ),
    "mainnet_trongrid_v1_accounts_TL24LCps_frozenV2.json": (
        "account",
        AccountState(
            address=TL24,  # given in hex
            balance=1100002,
            frozen_v2={"BANDWIDTH": 0, "ENERGY": 402000000, "TRON_POWER": 0},  # [{}, ENERGY, {"type": TRON_POWER}]
            unfrozen_v2=(),
            delegated_v2={"BANDWIDTH": 0, "ENERGY": 0},
            acquired_delegated_v2={"BANDWIDTH": 0, "ENERGY": 0},
            frozen_v1={"BANDWIDTH": 0, "ENERGY": 1000000, "TRON_POWER": 0},
        ),
    ),
    "nile_getdelegatedresourcev2_visible_true.json": (
        "delegated_resources",
        [
            DelegatedResource(
                from_address="TDsCgUWZkyBLEEJXP2B1X81bASueT1Uqtf",
                to_address="TMHy1fRsYsD4gCgTZbysd9yH9AQFQnTZQS",
                bandwidth=308593660,
                energy=677377195,
                expire_time_for_bandwidth_ms=0,
                expire_time_for_energy_ms=1785353340000,
            )
        ],
    ),
    "mainnet_getaccountresource_TL24LCps.json": ("not_parsed", {"TotalEnergyWeight", "TotalNetWeight"}),
    "nile_getdelegatedresourceaccountindexv2_visible_true.json": ("not_parsed", {"account", "toAccounts"}),
    # Event-plugin triggers.
    "testnet_eventplugin_blocktrigger_2021.json": (
        "trigger",
        BlockTrigger(
            block_number=17924932,
            block_hash="000000000111834415f8ef62981126da6a34d15d712ed6cf7b81342ba069a08b",
            timestamp_ms=1626887961000,
            latest_solidified_block_number=17924914,
            removed=False,
        ),
    ),
    "testnet_eventplugin_transactiontrigger_triggersmartcontract_2021.json": (
        "trigger",
        TransactionTrigger(
            tx_id="d51101d58a80a36fad4588bac295c277b0360904ce8584e5a90184536f6af38c",
            contract_type="TriggerSmartContract",
            block_number=17925042,
            block_hash="00000000011183b2a9855e6bdb4e3d49a4ab6d3c2f163414c354e75ecd688381",
            timestamp_ms=1626888297000,
            latest_solidified_block_number=17925024,
            removed=False,
        ),
    ),
}


def _fixture_names() -> list[str]:
    on_disk = {p.name for p in FIXTURES.iterdir() if p.is_file()} if FIXTURES.is_dir() else set()
    return sorted(on_disk | set(FIXTURE_TABLE))


def test_fixture_folder_exists() -> None:
    assert FIXTURES.is_dir(), f"fixtures folder {FIXTURES} not found (set TRON_FIXTURES_DIR)"


@pytest.mark.parametrize("name", _fixture_names())
def test_fixture(name: str) -> None:
    path = FIXTURES / name
    assert name in FIXTURE_TABLE, f"{name} is not classified: add it to FIXTURE_TABLE with its expected result"
    assert path.is_file(), f"{name} is in FIXTURE_TABLE but not in {FIXTURES}"
    kind, expected = FIXTURE_TABLE[name]
    data = path.read_text() if kind == "doc" else json.loads(path.read_text())
    CHECKS[kind](name, data, expected)


# --- part 2: addresses -----------------------------------------------------------------------------

# (hex taken from the fixture's raw_data_hex, base58 from its visible=true JSON), so each pair is
# the node's own conversion, not ours.
NODE_ADDRESS_PAIRS = [
    (TX_DELEGATE_LOCK, "41c8599111f29c1e1e061265b4af93ea1f274ad78a", NILE_OWNER),
    (TX_DELEGATE_LOCK, "41b6e708a39781c96bd399c7657780ff9fe9f052a8", NILE_RECEIVER),
    (
        "mainnet_unsigned_freezebalancev2_energy_visible_true_233666eb.json",
        "41a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
    ),
]


@pytest.mark.parametrize(("name", "hex_addr", "b58"), NODE_ADDRESS_PAIRS)
def test_address_forms_match_the_node(name: str, hex_addr: str, b58: str) -> None:
    tx = load(name)
    assert hex_addr in tx["raw_data_hex"] and b58 in value_of(tx).values()
    assert to_base58(hex_addr) == b58
    assert to_base58(hex_addr.upper()) == b58  # hex is case-insensitive
    assert to_base58(b58) == b58
    assert to_hex(b58) == hex_addr
    assert to_hex(hex_addr.upper()) == hex_addr
    assert is_address(hex_addr) and is_address(b58)


@pytest.mark.parametrize(
    "bad",
    [
        "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdJ",  # last char changed: checksum fails
        "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYd",  # too short
        "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWY0H",  # '0' is not in the base58 alphabet
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",  # a valid base58check Bitcoin address, wrong prefix
        "42c8599111f29c1e1e061265b4af93ea1f274ad78a",  # hex with a wrong prefix byte
        "c8599111f29c1e1e061265b4af93ea1f274ad78a",  # 20-byte hex without 41 (log address form)
        "0x41c8599111f29c1e1e061265b4af93ea1f274ad78a",
        "41c8599111f29c1e1e061265b4af93ea1f274ad78g",
        "",
    ],
)
def test_address_rejects_invalid_text(bad: str) -> None:
    with pytest.raises(AddressError, match="address|TRON"):
        to_base58(bad)
    with pytest.raises(ValueError):  # AddressError is a ValueError
        to_hex(bad)
    assert not is_address(bad)


def test_address_rejects_non_strings() -> None:
    for bad in (None, 41, b"41c8599111f29c1e1e061265b4af93ea1f274ad78a"):
        assert not is_address(bad)
        with pytest.raises(AddressError, match="must be a string"):
            to_base58(bad)  # type: ignore[arg-type]


# --- part 2: transaction rules ---------------------------------------------------------------------


def test_hex_and_base58_transactions_give_the_same_operations() -> None:
    hex_tx = load(TX_UNDELEGATE)
    b58_tx = load(TX_UNDELEGATE)
    value = value_of(b58_tx)
    value["owner_address"] = to_base58(value["owner_address"])
    value["receiver_address"] = to_base58(value["receiver_address"])
    assert value["owner_address"].startswith("T")
    assert one_tx(hex_tx) == one_tx(b58_tx)
    assert one_tx(hex_tx)[0].receiver_address == WALLETCLI_RECEIVER


def test_omitted_fields_take_proto3_defaults() -> None:
    tx = load(TX_FREEZE_BW)
    assert "resource" not in value_of(tx)
    assert one_tx(tx)[0].resource == "BANDWIDTH"
    del value_of(tx)["frozen_balance"]
    assert_ops(one_tx(tx), [row("freeze", "BANDWIDTH", 0, WALLETCLI_OWNER)])
    # An unlocked delegation prints neither lock nor lock_period.
    wrapper = load("testnet_unknown_walletcli2023_delegateresource_energy_unlocked_visible_true_0917002d.json")
    delegate = with_computed_txid(wrapper["wallet_cli_json_unsigned"])
    assert not {"lock", "lock_period"} & set(value_of(delegate))
    op = one_tx(delegate)[0]
    assert (op.lock, op.lock_period, op.lock_expire_time_ms) == (False, 0, None)


@pytest.mark.parametrize(
    ("edit", "lock", "lock_period"),
    [
        ({}, True, 28800),  # as the Nile node built it
        ({"lock_period": None}, True, DEFAULT_LOCK_PERIOD_BLOCKS),  # lock without a period: 3 days
        ({"lock_period": 0}, True, DEFAULT_LOCK_PERIOD_BLOCKS),
        ({"lock": None, "lock_period": None}, False, 0),
        ({"lock": False}, False, 28800),  # a stray period is kept as given; unlocked rows ignore it
    ],
)
def test_delegate_lock_period(edit: dict[str, Any], lock: bool, lock_period: int) -> None:
    tx = load(TX_DELEGATE_LOCK)
    value = value_of(tx)
    for key, new in edit.items():
        if new is None:
            del value[key]
        else:
            value[key] = new
    (op,) = one_tx(tx)
    assert (op.lock, op.lock_period) == (lock, lock_period)
    if lock:
        assert op.lock_expire_time_ms == op.block_time_ms + lock_period * 3000


def test_undelegate_is_never_locked() -> None:
    tx = load(TX_UNDELEGATE)
    value_of(tx).update({"lock": True, "lock_period": 28800})  # not fields of UnDelegate; ignored
    (op,) = one_tx(tx)
    assert (op.kind, op.lock, op.lock_period) == ("undelegate", False, 0)


def freeze_v1_record(resource: Any, resource_type: str | None) -> dict[str, Any]:
    """TronGrid's V1 freeze record with `resource` as given, and `resource_type` beside it if not None."""
    rec: dict[str, Any] = load(TG_FREEZE_V1)
    value = value_of(rec)
    value["resource"] = resource
    value.pop("resource_type")
    if resource_type is not None:
        value["resource_type"] = resource_type
    return rec


@pytest.mark.parametrize(
    ("resource", "resource_type", "expected"),
    [(1, "ENERGY", "ENERGY"), (0, "BANDWIDTH", "BANDWIDTH"), (2, None, "TRON_POWER"), ("ENERGY", None, "ENERGY")],
)
def test_resource_as_number_or_name(resource: Any, resource_type: str | None, expected: str) -> None:
    assert parse_trongrid_record(freeze_v1_record(resource, resource_type))[0].resource == expected


@pytest.mark.parametrize(
    ("resource", "resource_type"), [(0, "ENERGY"), (3, None), (True, None), ("energy", None), (1.0, None)]
)
def test_bad_resource_is_malformed(resource: Any, resource_type: str | None) -> None:
    with pytest.raises(ChainDataError, match="resource"):
        parse_trongrid_record(freeze_v1_record(resource, resource_type))


def test_amounts_beyond_2_pow_53_stay_exact() -> None:
    text = (FIXTURES / TX_FREEZE_BW).read_text().replace("1000000000000000", "9007199254740993")
    assert float(9007199254740993) != 9007199254740993  # a float would have rounded it
    (op,) = one_tx(json.loads(text))
    assert op.amount == 9007199254740993 and type(op.amount) is int
    tx = load(TX_FREEZE_BW)
    value_of(tx)["frozen_balance"] = 2**63 - 1
    assert one_tx(tx)[0].amount == 2**63 - 1


@pytest.mark.parametrize("amount", [1000000.0, "1000000", True, -1, None])
def test_non_integer_amounts_are_malformed(amount: Any) -> None:
    tx = load(TX_FREEZE_BW)
    value_of(tx)["frozen_balance"] = amount
    with pytest.raises(ChainDataError, match="frozen_balance"):
        one_tx(tx)


def test_failed_transaction_is_kept_as_failed() -> None:
    tx = load(TX_FREEZE_BW)
    tx["ret"] = [{"contractRet": "REVERT"}]
    (op,) = one_tx(tx, status="confirmed")
    assert (op.status, op.contract_ret, op.amount) == ("failed", "REVERT", 1000000000000000)
    # Absent contractRet means unknown, not success and not failure: the status argument applies.
    rets: list[list[dict[str, Any]]] = [[{}], []]
    for ret in rets:
        tx["ret"] = ret
        (op,) = one_tx(tx, status="confirmed")
        assert (op.status, op.contract_ret) == ("confirmed", None)
    del tx["ret"]
    assert one_tx(tx)[0].status == "pending"


def test_failed_transaction_needs_no_info() -> None:
    withdraw = load(TX_WITHDRAW)
    withdraw["ret"] = [{"contractRet": "REVERT"}]
    cancel = load(BLOCK_CANCEL)["transactions"][0]
    cancel["ret"] = [{"contractRet": "REVERT"}]
    block = block_of(withdraw, cancel)
    assert not needs_transaction_info(block, None)
    parsed = parse_block(block)
    assert_ops(
        parsed.operations,
        [
            row("withdraw_expire_unfreeze", None, 0, WALLETCLI_OWNER, status="failed", contract_ret="REVERT"),
            row("cancel_all_unfreeze", None, 0, CANCEL_OWNER, status="failed", contract_ret="REVERT"),
        ],
    )
    # A failed transaction moved nothing, so amounts in its info are ignored: a failed cancel is
    # one zero row, a failed V1 unfreeze or UnfreezeBalanceV2 has no info amount.
    ops = one_tx(cancel, info=load(INFO_CANCEL))
    assert_ops(ops, [row("cancel_all_unfreeze", None, 0, CANCEL_OWNER, status="failed")])
    v1 = load(TX_UNFREEZE_V1)
    v1["ret"] = [{"contractRet": "REVERT"}]
    assert [op.amount for op in one_tx(v1, info=info_for(v1, unfreeze_amount=5))] == [0]
    v2 = load(TX_UNFREEZE_V2)
    v2["ret"] = [{"contractRet": "REVERT"}]
    ops = one_tx(v2, info=info_for(v2, withdraw_expire_amount=5))
    assert_ops(ops, [row("unfreeze", "BANDWIDTH", 9000000, WALLETCLI_OWNER, status="failed")])


def test_missing_transaction_info_raises() -> None:
    block = load(BLOCK_CANCEL)
    assert needs_transaction_info(block, None)
    for infos in (None, {}, parse_transaction_infos(load(INFOS_CHAINSTORAGE))):
        with pytest.raises(MissingTransactionInfo, match=CANCEL_TX_ID):
            parse_block(block, infos=infos)
    # An info from another block means a fork between the two requests: refetch as well.
    stale = load(INFO_CANCEL)
    stale["blockNumber"] = 164
    with pytest.raises(MissingTransactionInfo, match="block 164"):
        parse_block(block, infos=parse_transaction_infos([stale]))
    # Not needed when the transaction is not tracked.
    assert not needs_transaction_info(block, {UNDELEGATE_OWNER})
    assert parse_block(block, tracked={UNDELEGATE_OWNER}).operations == []


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        (TX_WITHDRAW, True),
        (TX_UNFREEZE_V2, True),  # may auto-withdraw
        (TX_UNFREEZE_V1, True),
        (TX_FREEZE_BW, False),
        (TX_UNDELEGATE, False),
        (TX_DELEGATE_LOCK, False),
    ],
)
def test_needs_transaction_info_per_contract(name: str, needs: bool) -> None:
    tx = load(name)
    owner = to_base58(value_of(tx)["owner_address"])
    assert needs_transaction_info(block_of(tx), None) is needs
    assert needs_transaction_info(block_of(tx), {owner}) is needs
    assert needs_transaction_info(block_of(tx), {CANCEL_OWNER}) is False
    if needs:
        with pytest.raises(MissingTransactionInfo):
            parse_block(block_of(tx))
    else:
        assert len(parse_block(block_of(tx)).operations) == 1


def test_needs_transaction_info_ignores_other_and_malformed_transactions() -> None:
    assert not needs_transaction_info(load(BLOCK_UNDELEGATE), None)
    empty = load(BLOCK_CANCEL)
    del empty["transactions"]
    assert not needs_transaction_info(empty, None)
    assert not needs_transaction_info(block_of(load(DOC_ERROR)), None)


def test_info_amounts_for_withdraw_and_v1_unfreeze() -> None:
    withdraw = load(TX_WITHDRAW)
    v1 = load(TX_UNFREEZE_V1)
    infos = parse_transaction_infos(
        [info_for(withdraw, withdraw_expire_amount=7000000), info_for(v1, unfreeze_amount=5000000)]
    )
    parsed = parse_block(block_of(withdraw, v1), infos=infos, status="confirmed")
    assert_ops(
        parsed.operations,
        [
            row("withdraw_expire_unfreeze", None, 7000000, WALLETCLI_OWNER, status="confirmed"),
            row("unfreeze", "BANDWIDTH", 5000000, "TCfiyD8KTX61qvg7T6XZeZhNRRPPD5bwtz", status="confirmed"),
        ],
    )
    assert [op.tx_index for op in parsed.operations] == [0, 1]
    # Present but without the amount key (proto3 omits 0): amount 0.
    parsed = parse_block(block_of(withdraw), infos=parse_transaction_infos([info_for(withdraw)]))
    assert [op.amount for op in parsed.operations] == [0]


@pytest.mark.parametrize(("withdrawn", "extra_rows"), [(None, 0), (0, 0), (12345678, 1)])
def test_unfreeze_v2_auto_withdraw(withdrawn: int | None, extra_rows: int) -> None:
    tx = load(TX_UNFREEZE_V2)
    info = info_for(tx) if withdrawn is None else info_for(tx, withdraw_expire_amount=withdrawn)
    ops = parse_block(block_of(tx), infos=parse_transaction_infos([info])).operations
    expected = [row("unfreeze", "BANDWIDTH", 9000000, WALLETCLI_OWNER, contract_type="UnfreezeBalanceV2Contract")]
    if extra_rows:
        assert withdrawn is not None
        expected.append(row("withdraw_expire_unfreeze", None, withdrawn, WALLETCLI_OWNER))
    assert_ops(ops, expected)
    assert {op.tx_id for op in ops} == {tx["txID"]}


@pytest.mark.parametrize(
    ("cancelled", "withdrawn", "expected"),
    [
        # Key/value array in node order (ENERGY, TRON_POWER, BANDWIDTH); rows come out B, E, TP.
        (
            [{"key": "ENERGY", "value": 5}, {"key": "TRON_POWER", "value": 7}, {"key": "BANDWIDTH", "value": 3}],
            None,
            [
                ("cancel_all_unfreeze", "BANDWIDTH", 3),
                ("cancel_all_unfreeze", "ENERGY", 5),
                ("cancel_all_unfreeze", "TRON_POWER", 7),
            ],
        ),
        # A plain object is accepted too, and matured lots withdrawn on the way give a last row.
        (
            {"ENERGY": 10000000, "BANDWIDTH": 0},
            4000000,
            [("cancel_all_unfreeze", "ENERGY", 10000000), ("withdraw_expire_unfreeze", None, 4000000)],
        ),
        # Only a withdrawal.
        ([{"key": "ENERGY", "value": 0}], 4000000, [("withdraw_expire_unfreeze", None, 4000000)]),
        # Nothing at all: one zero row keeps the transaction on record.
        (
            [{"key": "ENERGY", "value": 0}, {"key": "TRON_POWER", "value": 0}, {"key": "BANDWIDTH", "value": 0}],
            None,
            [("cancel_all_unfreeze", None, 0)],
        ),
        (None, None, [("cancel_all_unfreeze", None, 0)]),
    ],
)
def test_cancel_all_unfreeze_rows(cancelled: Any, withdrawn: int | None, expected: list[tuple[Any, ...]]) -> None:
    block = load(BLOCK_CANCEL)
    info = load(INFO_CANCEL)
    info.pop("cancel_unfreezeV2_amount")
    if cancelled is not None:
        info["cancel_unfreezeV2_amount"] = cancelled
    if withdrawn is not None:
        info["withdraw_expire_amount"] = withdrawn
    ops = parse_block(block, infos=parse_transaction_infos([info])).operations
    assert_ops(ops, [row(kind, res, amount, CANCEL_OWNER) for kind, res, amount in expected])


@pytest.mark.parametrize(
    "cancelled",
    [
        [{"key": "SOLAR", "value": 1}],
        [{"key": "ENERGY", "value": 1}, {"key": "ENERGY", "value": 2}],
        [{"key": "ENERGY", "value": "1"}],
        "ENERGY",
    ],
)
def test_bad_cancel_amounts_become_an_issue(cancelled: Any) -> None:
    info = load(INFO_CANCEL)
    info["cancel_unfreezeV2_amount"] = cancelled
    parsed = parse_block(load(BLOCK_CANCEL), infos=parse_transaction_infos([info]))
    assert parsed.operations == []
    assert [(i.block_num, i.tx_id) for i in parsed.issues] == [(165, CANCEL_TX_ID)]
    assert "cancel_unfreezeV2_amount" in parsed.issues[0].message


def test_info_of_another_transaction_is_rejected() -> None:
    withdraw = load(TX_WITHDRAW)
    with pytest.raises(ChainDataError, match="paired"):
        one_tx(withdraw, info=load(INFO_CANCEL))


def test_block_time_is_the_header_time_not_the_transaction_time() -> None:
    block = load(BLOCK_UNDELEGATE)
    (op,) = parse_block(block).operations
    assert op.block_time_ms == 1733675346000
    assert block["transactions"][1]["raw_data"]["timestamp"] == 1733675342497


def _corrupt(tx: dict[str, Any], how: str) -> dict[str, Any]:
    tx = copy.deepcopy(tx)
    value = value_of(tx)
    if how == "0x txID":
        tx["txID"] = "0x" + tx["txID"]
    elif how == "short txID":
        tx["txID"] = tx["txID"][:63]
    elif how == "no txID":
        del tx["txID"]
    elif how == "bad owner":
        value["owner_address"] = "42" + value["owner_address"][2:]  # hex has no checksum; the prefix is checked
    elif how == "no owner":
        del value["owner_address"]
    elif how == "no receiver":
        del value["receiver_address"]
    elif how == "float amount":
        value["balance"] = float(value["balance"])
    elif how == "string amount":
        value["balance"] = str(value["balance"])
    elif how == "two contracts":
        tx["raw_data"]["contract"] *= 2
    elif how == "no contract":
        tx["raw_data"]["contract"] = []
    elif how == "no raw_data":
        del tx["raw_data"]
    elif how == "type_url mismatch":
        tx["raw_data"]["contract"][0]["parameter"]["type_url"] = "type.googleapis.com/protocol.DelegateResourceContract"
    elif how == "transfer claiming stake":
        tx["raw_data"]["contract"][0]["type"] = "TransferContract"
    elif how == "bad ret":
        tx["ret"] = [{"contractRet": 1}]
    else:
        raise AssertionError(how)
    return tx


CORRUPTIONS = [
    "0x txID",
    "short txID",
    "no txID",
    "bad owner",
    "no owner",
    "no receiver",
    "float amount",
    "string amount",
    "two contracts",
    "no contract",
    "no raw_data",
    "type_url mismatch",
    "transfer claiming stake",
    "bad ret",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_malformed_transaction_is_an_issue_and_the_block_goes_on(how: str) -> None:
    block = load(BLOCK_UNDELEGATE)
    good = block["transactions"][1]
    bad = _corrupt(good, how)
    block["transactions"] = [block["transactions"][0], bad, good]
    with pytest.raises(ChainDataError):
        one_tx(bad)
    parsed = parse_block(block, tracked={UNDELEGATE_OWNER})
    assert len(parsed.issues) == 1
    issue = parsed.issues[0]
    assert issue.block_num == 67674988
    assert issue.tx_id == bad.get("txID")  # reported as given, even when malformed
    assert issue.message
    assert [(op.tx_id, op.tx_index, op.amount) for op in parsed.operations] == [(UNDELEGATE_TX_ID, 2, 248167143)]


def test_non_object_transaction_is_an_issue() -> None:
    block = load(BLOCK_UNDELEGATE)
    block["transactions"].insert(0, "not a transaction")
    parsed = parse_block(block)
    assert [(i.block_num, i.tx_id) for i in parsed.issues] == [(67674988, None)]
    assert [op.tx_index for op in parsed.operations] == [2]


def test_other_contract_types_are_skipped_silently() -> None:
    # The fixture's TransferContract even has an (author-edited) 0x txID: not our concern.
    block = load(BLOCK_UNDELEGATE)
    assert block["transactions"][0]["txID"].startswith("0x")
    parsed = parse_block(block)
    assert parsed.issues == [] and len(parsed.operations) == 1
    assert one_tx(load("mainnet_trongrid_v1_tx_withdrawbalance_reward_5364d831.json")) == []


def test_uppercase_txid_is_stored_lowercase() -> None:
    tx = load(TX_FREEZE_BW)
    tx["txID"] = tx["txID"].upper()
    assert one_tx(tx)[0].tx_id == load(TX_FREEZE_BW)["txID"]


@pytest.mark.parametrize(
    ("tracked", "kept"),
    [
        (None, 1),
        ({UNDELEGATE_OWNER}, 1),
        ({UNDELEGATE_RECEIVER}, 1),  # the receiver's side of a delegation counts too
        ({TL24}, 0),
        (frozenset(), 0),
        ({to_hex(UNDELEGATE_OWNER)}, 0),  # tracked addresses are base58, as stored
    ],
)
def test_tracked_filter_on_owner_and_receiver(tracked: set[str] | None, kept: int) -> None:
    parsed = parse_block(load(BLOCK_UNDELEGATE), tracked=tracked)
    assert len(parsed.operations) == kept
    assert parsed.issues == []


# --- part 2: blocks and replies ----------------------------------------------------------------------


def test_empty_block_has_no_transactions_key() -> None:
    block = load(BLOCK_CANCEL)
    del block["transactions"]
    parsed = parse_block(block)
    assert (parsed.number, parsed.operations, parsed.issues) == (165, [], [])


@pytest.mark.parametrize(
    "edit",
    ["{}", "no header", "no raw_data", "no number", "no timestamp", "string number", "no blockID", "bad transactions"],
)
def test_malformed_block_raises(edit: str) -> None:
    block = load(BLOCK_CANCEL)
    raw = block["block_header"]["raw_data"]
    if edit == "{}":
        block = {}
    elif edit == "no header":
        del block["block_header"]
    elif edit == "no raw_data":
        del block["block_header"]["raw_data"]
    elif edit == "no number":
        del raw["number"]
    elif edit == "no timestamp":
        del raw["timestamp"]
    elif edit == "string number":
        raw["number"] = "165"
    elif edit == "no blockID":
        del block["blockID"]
    elif edit == "bad transactions":
        block["transactions"] = {}
    with pytest.raises(ChainDataError):
        parse_block(block, infos=parse_transaction_infos([load(INFO_CANCEL)]))


def test_error_replies_raise_node_error() -> None:
    reply = {"Error": "class java.lang.NumberFormatException : For input string"}
    with pytest.raises(NodeError, match="NumberFormatException"):
        check_node_reply(reply)
    for parse in (parse_block, parse_transaction_infos, parse_account, parse_delegated_resources):
        with pytest.raises(NodeError):
            parse(reply)
    assert not issubclass(NodeError, ChainDataError)  # a node problem, not bad data: retry
    ok = load(BLOCK_CANCEL)
    assert check_node_reply(ok) is ok


def test_transaction_info_replies() -> None:
    assert parse_transaction_infos([]) == {}  # empty block
    infos = parse_transaction_infos(load(INFOS_CHAINSTORAGE))
    assert infos["baa42c87b7c764c548fa37e61e9764415fd4a79d7e073d4f92a456698002016b"]["receipt"] == {"net_usage": 268}
    bads: list[Any] = [{}, None, [load(INFO_CANCEL), load(INFO_CANCEL)], [{"blockNumber": 1}], ["x"]]
    for bad in bads:
        with pytest.raises(ChainDataError):
            parse_transaction_infos(bad)
    prefixed = load(INFO_CANCEL)
    prefixed["id"] = "0x" + prefixed["id"]
    with pytest.raises(ChainDataError, match="0x"):
        parse_transaction_infos([prefixed])


def test_status_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="status"):
        parse_block(load(BLOCK_UNDELEGATE), status="solid")


def test_trongrid_record_rules() -> None:
    rec = load(TG_FREEZE_V2)
    assert parse_trongrid_record(rec, status="confirmed")[0].status == "confirmed"
    rec["ret"][0]["contractRet"] = "OUT_OF_ENERGY"
    assert parse_trongrid_record(rec)[0].status == "failed"
    # UnfreezeBalanceV2 with TronGrid's top-level copy of withdraw_expire_amount.
    unfreeze = load(TG_FREEZE_V2)
    contract = unfreeze["raw_data"]["contract"][0]
    contract["type"] = "UnfreezeBalanceV2Contract"
    contract["parameter"]["type_url"] = "type.googleapis.com/protocol.UnfreezeBalanceV2Contract"
    value = contract["parameter"]["value"]
    value["unfreeze_balance"] = value.pop("frozen_balance")
    unfreeze["withdraw_expire_amount"] = 2000000
    assert_ops(
        parse_trongrid_record(unfreeze),
        [row("unfreeze", "ENERGY", 1000000, TL24), row("withdraw_expire_unfreeze", None, 2000000, TL24)],
    )
    del unfreeze["blockNumber"]
    with pytest.raises(ChainDataError, match="blockNumber"):
        parse_trongrid_record(unfreeze)


# --- part 2: account state and triggers -----------------------------------------------------------


def test_account_in_hex_and_base58_forms() -> None:
    account = load("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json")
    expected = parse_account(account)
    account["address"] = to_hex(account["address"])
    assert parse_account(account) == expected


def test_account_stake_fields() -> None:
    account = load("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json")
    account["frozenV2"] = [{}, {"type": "ENERGY"}, {"type": "TRON_POWER", "amount": 5}]
    account["unfrozenV2"].append({"unfreeze_amount": 2, "unfreeze_expire_time": 3})  # BANDWIDTH: no type
    account["delegated_frozenV2_balance_for_bandwidth"] = 11
    account["acquired_delegated_frozenV2_balance_for_bandwidth"] = 12
    account["account_resource"]["acquired_delegated_frozenV2_balance_for_energy"] = 13
    account["frozen"] = [{"frozen_balance": 20, "expire_time": 1}, {"frozen_balance": 22, "expire_time": 2}]
    state = parse_account(account)
    assert state.frozen_v2 == {"BANDWIDTH": 0, "ENERGY": 0, "TRON_POWER": 5}
    assert state.unfrozen_v2[-1] == UnfreezeLot("BANDWIDTH", 2, 3)
    assert state.delegated_v2 == {"BANDWIDTH": 11, "ENERGY": 3552150}
    assert state.acquired_delegated_v2 == {"BANDWIDTH": 12, "ENERGY": 13}
    assert state.frozen_v1["BANDWIDTH"] == 42


@pytest.mark.parametrize(
    "edit",
    [
        {},
        {"frozenV2": [{"type": "ENERGY", "amount": 1.5}]},
        {"frozenV2": {"type": "ENERGY"}},
        {"address": "not an address"},
        {"balance": "100"},
    ],
)
def test_bad_account_is_malformed(edit: dict[str, Any]) -> None:
    account = load("mainnet_getaccount_visible_true_TGusX_frozenV2_unfrozenV2_delegated.json")
    account = {} if not edit else {**account, **edit}
    with pytest.raises(ChainDataError):
        parse_account(account)


def test_delegated_resources_replies() -> None:
    reply = load("nile_getdelegatedresourcev2_visible_true.json")
    assert parse_delegated_resources({}) == []  # no delegation
    assert parse_delegated_resources(reply["delegatedResource"]) == parse_delegated_resources(reply)
    entry = reply["delegatedResource"][0]
    entry["from"] = to_hex(entry["from"])
    assert parse_delegated_resources(reply)[0].from_address == "TDsCgUWZkyBLEEJXP2B1X81bASueT1Uqtf"
    entry["frozen_balance_for_energy"] = -1
    with pytest.raises(ChainDataError):
        parse_delegated_resources(reply)


def test_trigger_rules() -> None:
    trigger = load("testnet_eventplugin_blocktrigger_2021.json")
    trigger["removed"] = True  # java-tron >= 4.8.2 re-emits rolled-back blocks
    assert parse_trigger(trigger).removed is True
    for edit in (
        {"triggerName": "contractLogTrigger"},
        {"blockHash": "0x00"},
        {"removed": "yes"},
        {"blockNumber": None},
    ):
        with pytest.raises(ChainDataError):
            parse_trigger({**trigger, **edit})
    tx_trigger = load("testnet_eventplugin_transactiontrigger_triggersmartcontract_2021.json")
    del tx_trigger["transactionId"]
    with pytest.raises(ChainDataError, match="transactionId"):
        parse_trigger(tx_trigger)
