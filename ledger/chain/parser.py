"""Turn java-tron blocks (and TronGrid v1 transaction records) into ledger `Operation`s.

Rules (java-tron's HTTP JSON printer, framework/.../services/http/JsonFormat.java and Util.java; the
contract shapes in protocol/src/main/protos/core/contract/balance_contract.proto; TronGrid v1 records):
- event time is the block header timestamp, never the transaction's client-set one;
- exactly one contract per transaction; only stake contracts are parsed, others are skipped silently;
- absent fields take their proto3 default (resource = BANDWIDTH, amounts = 0, lock = false);
- withdraw, cancel and V1 unfreeze amounts live only in TransactionInfo, so a block holding such a
  tracked transaction must come with its infos (`MissingTransactionInfo` tells the listener to refetch);
- one bad transaction becomes a `ParseIssue` and never stops the rest of its block.

Account state and event-plugin triggers are parsed in `tron_account` and `tron_trigger`; they are
re-exported here so callers have one import for chain parsing.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.chain.account import (
    AccountState,
    DelegatedResource,
    UnfreezeLot,
    parse_account,
    parse_delegated_resources,
)
from ledger.chain.trigger import BlockTrigger, TransactionTrigger, parse_trigger
from ledger.chain.values import (
    ChainDataError,
    NodeError,
    address,
    as_int,
    as_list,
    as_object,
    check_node_reply,
    hex_id,
    opt_bool,
    opt_int,
    req_int,
    resource,
    resource_amounts,
)
from ledger.domain import (
    CANCEL,
    CANCEL_ALL_UNFREEZE,
    DEFAULT_LOCK_PERIOD_BLOCKS,
    DELEGATE,
    DELEGATE_RESOURCE,
    FAILED,
    FREEZE,
    FREEZE_V1,
    FREEZE_V2,
    PENDING,
    RESOURCES,
    STATUSES,
    UNDELEGATE,
    UNDELEGATE_RESOURCE,
    UNFREEZE,
    UNFREEZE_V1,
    UNFREEZE_V2,
    WITHDRAW,
    WITHDRAW_EXPIRE,
    Operation,
    PayloadError,
)

__all__ = [
    "AccountState",
    "BlockParse",
    "BlockTrigger",
    "ChainDataError",
    "DelegatedResource",
    "MissingTransactionInfo",
    "NodeError",
    "ParseIssue",
    "SkimmedBlock",
    "TransactionTrigger",
    "UnfreezeLot",
    "check_node_reply",
    "needs_transaction_info",
    "parse_account",
    "parse_block",
    "parse_delegated_resources",
    "parse_transaction",
    "parse_transaction_infos",
    "parse_trigger",
    "parse_trongrid_record",
]

STAKE_CONTRACTS = frozenset(
    {
        FREEZE_V1,
        UNFREEZE_V1,
        FREEZE_V2,
        UNFREEZE_V2,
        WITHDRAW_EXPIRE,
        DELEGATE_RESOURCE,
        UNDELEGATE_RESOURCE,
        CANCEL_ALL_UNFREEZE,
    }
)
# Contracts with an amount that only TransactionInfo knows (UnfreezeBalanceV2: its auto-withdraw).
INFO_CONTRACTS = frozenset({UNFREEZE_V1, UNFREEZE_V2, WITHDRAW_EXPIRE, CANCEL_ALL_UNFREEZE})

# TransactionInfo fields that TronGrid v1 copies to the top level of its transaction records.
INFO_AMOUNT_KEYS = ("unfreeze_amount", "withdraw_expire_amount", "cancel_unfreezeV2_amount")

SUCCESS = "SUCCESS"


class MissingTransactionInfo(ChainDataError):
    """A tracked transaction needs its TransactionInfo and the infos given lack it (or are stale);
    the listener should refetch `gettransactioninfobyblocknum` and parse the block again."""


class SkimmedBlock(dict[str, Any]):
    """A block whose `transactions` holds only those that may give an operation or an issue (see
    ledger.chain.skim); `tx_indices[i]` is the position in the node's block of `transactions[i]`."""

    def __init__(self, tx_indices: list[int], fields: Iterable[tuple[str, Any]] = ()) -> None:
        super().__init__(fields)
        self.tx_indices = tx_indices


@dataclass(frozen=True, slots=True)
class ParseIssue:
    """A transaction that could not be parsed and was skipped; the rest of the block still counts."""

    block_num: int
    tx_id: str | None  # the txID as given (possibly malformed), None when there was none
    message: str


@dataclass(frozen=True, slots=True)
class BlockParse:
    number: int
    block_id: str
    parent_hash: str
    timestamp_ms: int
    operations: list[Operation]
    issues: list[ParseIssue]


@dataclass(frozen=True, slots=True)
class _Stake:
    """One stake contract read from a transaction, before TransactionInfo amounts are applied."""

    tx_id: str
    contract_type: str
    owner: str
    receiver: str | None  # delegations only
    resource: str | None  # None for withdraw and cancel, which name no resource
    amount: int  # the contract's own amount; 0 for contracts whose amount is in TransactionInfo
    lock: bool
    lock_period: int
    contract_ret: str | None

    @property
    def failed(self) -> bool:
        # A missing contractRet is "unknown", not a failure: DEFAULT=0 in Tron.proto's contractResult
        # is the one value proto3 printing omits.
        return self.contract_ret is not None and self.contract_ret != SUCCESS

    @property
    def needs_info(self) -> bool:
        # A failed transaction moved nothing, so its missing info amounts are simply 0.
        return self.contract_type in INFO_CONTRACTS and not self.failed

    def tracked_by(self, tracked: Container[str] | None) -> bool:
        if tracked is None:
            return True
        return self.owner in tracked or (self.receiver is not None and self.receiver in tracked)


def needs_transaction_info(block: Mapping[str, Any], tracked: Container[str] | None) -> bool:
    """True when `parse_block` would need this block's TransactionInfos: some tracked, not failed
    transaction has an amount that lives only there. Malformed transactions are ignored here; they
    become issues in `parse_block` without needing any info."""
    for tx in _transactions(block):
        try:
            stake = _read_stake(tx)
        except ChainDataError:
            continue
        if stake is not None and stake.needs_info and stake.tracked_by(tracked):
            return True
    return False


def parse_transaction_infos(reply: Any) -> dict[str, dict[str, Any]]:
    """Index a `/wallet/gettransactioninfobyblocknum` reply (a bare array) by transaction id."""
    check_node_reply(reply)
    items = as_list(reply, "gettransactioninfobyblocknum reply")
    infos: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        item = as_object(item, f"transaction info [{i}]")
        tx_id = hex_id(item.get("id"), f"transaction info [{i}].id")
        if tx_id in infos:
            raise ChainDataError(f"transaction info {tx_id} appears twice")
        infos[tx_id] = dict(item)
    return infos


def parse_block(
    block: Mapping[str, Any],
    *,
    tracked: Container[str] | None = None,
    infos: Mapping[str, Mapping[str, Any]] | None = None,
    status: str = PENDING,
    parent_time_ms: int | None = None,
) -> BlockParse:
    """Parse a `/wallet/getblockbynum`-style block into the operations of tracked addresses.

    Raises NodeError for an `Error` reply, ChainDataError for a malformed block (`{}` included) and
    MissingTransactionInfo when a tracked transaction needs an info that `infos` lacks.
    `parent_time_ms` is the parent block's timestamp, java-tron's "now" for this block's
    transactions (carried on every operation, see Operation.parent_time_ms). A malformed
    stake transaction is reported in `issues` and skipped, whoever owns it: its owner field cannot
    be trusted to decide whether it is tracked."""
    _check_status(status)
    check_node_reply(block)
    header = as_object(as_object(block, "block").get("block_header"), "block.block_header")
    raw = as_object(header.get("raw_data"), "block.block_header.raw_data")
    number = req_int(raw, "number", "block header")
    timestamp_ms = req_int(raw, "timestamp", "block header")
    block_id = hex_id(block.get("blockID"), f"block {number} blockID")
    parent_hash = hex_id(raw.get("parentHash"), f"block {number} parentHash")

    operations: list[Operation] = []
    issues: list[ParseIssue] = []
    transactions = _transactions(block)
    indices = block.tx_indices if isinstance(block, SkimmedBlock) else range(len(transactions))
    for tx_index, tx in zip(indices, transactions, strict=True):
        try:
            stake = _read_stake(tx)
        except ChainDataError as exc:
            issues.append(ParseIssue(number, _raw_tx_id(tx), str(exc)))
            continue
        if stake is None or not stake.tracked_by(tracked):
            continue
        # Outside the try: a missing info must reach the listener, not become an issue.
        info = _block_info(stake, infos, number)
        try:
            operations.extend(
                _operations(stake, info, number, block_id, timestamp_ms, tx_index, status, parent_time_ms)
            )
        except ChainDataError as exc:
            issues.append(ParseIssue(number, stake.tx_id, str(exc)))
    return BlockParse(number, block_id, parent_hash, timestamp_ms, operations, issues)


def parse_transaction(
    tx: Mapping[str, Any],
    *,
    block_num: int,
    block_id: str,
    block_time_ms: int,
    tx_index: int,
    info: Mapping[str, Any] | None,
    status: str,
    parent_time_ms: int | None = None,
) -> list[Operation]:
    """The operations of one transaction ([] for a non-stake contract); ChainDataError if malformed.

    `info` is its TransactionInfo. None means no info is known (e.g. an unsigned transaction) and
    the amounts that live only there count as 0; `parse_block` refuses that case for blocks."""
    _check_status(status)
    stake = _read_stake(tx)
    if stake is None:
        return []
    return _operations(stake, info, block_num, block_id, block_time_ms, tx_index, status, parent_time_ms)


def parse_trongrid_record(rec: Mapping[str, Any], *, status: str = PENDING) -> list[Operation]:
    """The operations of a TronGrid `/v1/accounts/{a}/transactions` item.

    TronGrid copies the TransactionInfo amounts to the top level, where absent means 0. The block id
    and the position in the block are not in the record, so they are "" and 0."""
    rec = as_object(rec, "TronGrid record")
    block_num = req_int(rec, "blockNumber", "TronGrid record")
    block_time_ms = req_int(rec, "block_timestamp", "TronGrid record")
    info = {key: rec[key] for key in INFO_AMOUNT_KEYS if key in rec}
    return parse_transaction(
        rec,
        block_num=block_num,
        block_id="",
        block_time_ms=block_time_ms,
        tx_index=0,
        info=info,
        status=status,
    )


# --- reading one transaction ---------------------------------------------------------------------


def _read_stake(tx: Any) -> _Stake | None:
    """Validate a transaction and read its stake contract; None for any other contract type."""
    tx = as_object(tx, "transaction")
    raw = as_object(tx.get("raw_data"), "raw_data")
    contracts = as_list(raw.get("contract"), "raw_data.contract")
    if len(contracts) != 1:
        # java-tron rejects such transactions (ContractSizeNotEqualToOneException).
        raise ChainDataError(f"expected exactly 1 contract, got {len(contracts)}")
    contract = as_object(contracts[0], "raw_data.contract[0]")
    ctype = contract.get("type")
    if not isinstance(ctype, str) or not ctype:
        raise ChainDataError(f"contract type must be a non-empty string, got {ctype!r}")
    parameter = contract.get("parameter")
    type_url = parameter.get("type_url") if isinstance(parameter, Mapping) else None
    url_name = type_url.rsplit("/", 1)[-1] if isinstance(type_url, str) else None
    if ctype not in STAKE_CONTRACTS:
        # Skipped silently, unless its type_url claims a stake contract: then one of them lies.
        if url_name is not None and url_name.removeprefix("protocol.") in STAKE_CONTRACTS:
            raise ChainDataError(f"contract type {ctype} contradicts type_url {type_url!r}")
        return None
    if url_name != f"protocol.{ctype}":
        raise ChainDataError(f"contract type {ctype} contradicts type_url {type_url!r}")

    tx_id = hex_id(tx.get("txID"), "txID")
    value = as_object(as_object(parameter, "parameter").get("value"), "parameter.value")
    where = f"{ctype} value"
    owner = address(value.get("owner_address"), f"{where}.owner_address")
    receiver: str | None = None
    res: str | None = None
    amount = 0
    lock = False
    lock_period = 0
    if ctype in (FREEZE_V1, FREEZE_V2):
        res = resource(value, "resource", where)
        amount = opt_int(value, "frozen_balance", where)
    elif ctype == UNFREEZE_V2:
        res = resource(value, "resource", where)
        amount = opt_int(value, "unfreeze_balance", where)
    elif ctype == UNFREEZE_V1:
        res = resource(value, "resource", where)
    elif ctype in (DELEGATE_RESOURCE, UNDELEGATE_RESOURCE):
        res = resource(value, "resource", where)
        amount = opt_int(value, "balance", where)
        receiver = address(value.get("receiver_address"), f"{where}.receiver_address")
        if ctype == DELEGATE_RESOURCE:
            lock = opt_bool(value, "lock", where)
            lock_period = opt_int(value, "lock_period", where)
            if lock and lock_period == 0:
                # A lock without lock_period (before v4.7.2, or 0) is the 3-day default.
                lock_period = DEFAULT_LOCK_PERIOD_BLOCKS
    # WithdrawExpireUnfreeze and CancelAllUnfreezeV2 carry only the owner.
    return _Stake(tx_id, ctype, owner, receiver, res, amount, lock, lock_period, _contract_ret(tx))


def _contract_ret(tx: Mapping[str, Any]) -> str | None:
    """`ret[0].contractRet` as given; None when absent (unsigned transactions have no `ret`)."""
    if "ret" not in tx:
        return None
    ret = as_list(tx["ret"], "ret")
    if not ret:
        return None
    value = as_object(ret[0], "ret[0]").get("contractRet")
    if value is not None and (not isinstance(value, str) or not value):
        raise ChainDataError(f"ret[0].contractRet must be a string, got {value!r}")
    return value


# --- TransactionInfo and decomposition ------------------------------------------------------------


def _block_info(
    stake: _Stake, infos: Mapping[str, Mapping[str, Any]] | None, block_num: int
) -> Mapping[str, Any] | None:
    if stake.contract_type not in INFO_CONTRACTS:
        return None  # nothing to read from it, so a stale or absent info does not matter
    info = infos.get(stake.tx_id) if infos is not None else None
    if info is None:
        if stake.needs_info:
            raise MissingTransactionInfo(
                f"block {block_num}: transaction {stake.tx_id} ({stake.contract_type}) "
                f"needs its TransactionInfo, which was not given"
            )
        return None
    # getblockbynum and gettransactioninfobyblocknum are not atomic: an info from another block
    # means a fork happened in between, so the pair must be fetched again.
    info_block = info.get("blockNumber") if isinstance(info, Mapping) else None
    if info_block is not None and info_block != block_num:
        raise MissingTransactionInfo(
            f"block {block_num}: the TransactionInfo of {stake.tx_id} is from block {info_block}"
        )
    return info


def _operations(
    stake: _Stake,
    info: Mapping[str, Any] | None,
    block_num: int,
    block_id: str,
    block_time_ms: int,
    tx_index: int,
    status: str,
    parent_time_ms: int | None = None,
) -> list[Operation]:
    if info is not None:
        info = as_object(info, f"TransactionInfo of {stake.tx_id}")
        info_id = info.get("id")
        if info_id is not None and hex_id(info_id, "TransactionInfo id") != stake.tx_id:
            raise ChainDataError(f"TransactionInfo {info_id} was paired with transaction {stake.tx_id}")
    # A failed transaction moved nothing: amounts from its info (normally absent anyway) are ignored.
    rows = _decompose(stake, {} if stake.failed or info is None else info)
    final_status = FAILED if stake.failed else status
    operations = []
    for op_index, (kind, res, amount) in enumerate(rows):
        delegation = kind in (DELEGATE, UNDELEGATE)
        op = Operation(
            tx_id=stake.tx_id,
            op_index=op_index,
            block_num=as_int(block_num, "block number"),
            block_id=block_id,
            tx_index=tx_index,
            block_time_ms=as_int(block_time_ms, "block timestamp"),
            contract_type=stake.contract_type,
            kind=kind,
            owner_address=stake.owner,
            resource=res,
            amount=amount,
            receiver_address=stake.receiver if delegation else None,
            lock=stake.lock if kind == DELEGATE else False,
            lock_period=stake.lock_period if kind == DELEGATE else 0,
            status=final_status,
            contract_ret=stake.contract_ret,
            parent_time_ms=parent_time_ms,
        )
        try:
            op.validate()  # the same check a worker applies, so a bad row never leaves the listener
        except PayloadError as exc:
            raise ChainDataError(f"transaction {stake.tx_id} gives an invalid operation: {exc}") from None
        operations.append(op)
    return operations


def _decompose(stake: _Stake, info: Mapping[str, Any]) -> list[tuple[str, str | None, int]]:
    """(kind, resource, amount) rows of one transaction, in op_index order."""
    where = f"TransactionInfo of {stake.tx_id}"
    ctype = stake.contract_type
    if ctype in (FREEZE_V1, FREEZE_V2):
        return [(FREEZE, stake.resource, stake.amount)]
    if ctype == UNFREEZE_V1:
        return [(UNFREEZE, stake.resource, opt_int(info, "unfreeze_amount", where))]
    if ctype == UNFREEZE_V2:
        rows = [(UNFREEZE, stake.resource, stake.amount)]
        return rows + _withdraw_rows(info, where)
    if ctype == WITHDRAW_EXPIRE:
        return [(WITHDRAW, None, opt_int(info, "withdraw_expire_amount", where))]
    if ctype == DELEGATE_RESOURCE:
        return [(DELEGATE, stake.resource, stake.amount)]
    if ctype == UNDELEGATE_RESOURCE:
        return [(UNDELEGATE, stake.resource, stake.amount)]
    if ctype == CANCEL_ALL_UNFREEZE:
        cancelled = resource_amounts(info.get("cancel_unfreezeV2_amount", []), f"{where}.cancel_unfreezeV2_amount")
        rows = [(CANCEL, res, cancelled[res]) for res in RESOURCES if cancelled[res] > 0]
        rows += _withdraw_rows(info, where)
        # Keep one row even when nothing moved, so the transaction itself is on record.
        return rows or [(CANCEL, None, 0)]
    raise AssertionError(f"unhandled stake contract {ctype}")  # STAKE_CONTRACTS and this disagree


def _withdraw_rows(info: Mapping[str, Any], where: str) -> list[tuple[str, str | None, int]]:
    # Matured unfreezes withdrawn as a side effect of UnfreezeBalanceV2 / CancelAllUnfreezeV2.
    amount = opt_int(info, "withdraw_expire_amount", where)
    return [(WITHDRAW, None, amount)] if amount > 0 else []


# --- small helpers --------------------------------------------------------------------------------


def _transactions(block: Any) -> list[Any]:
    # A block without transactions has no `transactions` key at all (proto3 omits empty lists).
    return as_list(as_object(block, "block").get("transactions", []), "block.transactions")


def _raw_tx_id(tx: Any) -> str | None:
    tx_id = tx.get("txID") if isinstance(tx, Mapping) else None
    return tx_id if isinstance(tx_id, str) else None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}, got {status!r}")
