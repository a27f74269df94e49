"""Ground truth: how a stake transaction decomposes into ledger operations, and /sim/truth rows.

`decompose` works only from what the node serves (the contract value and the TransactionInfo
amounts), never from the generator's internal state, so the truth is exactly what a correct
parser can derive from the API. The product's parser implements the same rule independently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .addresses import AddressBook
from .model import Block, TruthRow, Tx
from .stake_state import DEFAULT_LOCK_PERIOD

# CancelAllUnfreezeV2 rows come in this order, whatever order the node prints the map in.
CANCEL_ROW_ORDER = ("BANDWIDTH", "ENERGY", "TRON_POWER")


def decompose(tx: Tx) -> tuple[TruthRow, ...]:
    """The ledger rows of one transaction; () for non-stake contracts."""
    value, kind_of = tx.value, tx.contract_type
    owner = str(value.get("owner_address", ""))
    info = tx.info
    resource = str(value.get("resource", "BANDWIDTH"))  # absent means the proto3 default

    def row(
        index: int,
        kind: str,
        res: str | None,
        amount: int,
        receiver: str | None = None,
        lock: bool = False,
        lock_period: int = 0,
    ) -> TruthRow:
        return TruthRow(index, kind, kind_of, owner, receiver, res, amount, lock, lock_period)

    if kind_of in ("FreezeBalanceV2Contract", "FreezeBalanceContract"):
        return (row(0, "freeze", resource, _int(value, "frozen_balance")),)
    if kind_of == "UnfreezeBalanceV2Contract":
        rows = [row(0, "unfreeze", resource, _int(value, "unfreeze_balance"))]
        if tx.success and info.withdraw_expire_amount > 0:
            rows.append(row(1, "withdraw_expire_unfreeze", None, info.withdraw_expire_amount))
        return tuple(rows)
    if kind_of == "UnfreezeBalanceContract":
        return (row(0, "unfreeze", resource, info.unfreeze_amount if tx.success else 0),)
    if kind_of == "WithdrawExpireUnfreezeContract":
        return (row(0, "withdraw_expire_unfreeze", None, info.withdraw_expire_amount if tx.success else 0),)
    if kind_of == "CancelAllUnfreezeV2Contract":
        return _cancel_rows(tx, row)
    if kind_of in ("DelegateResourceContract", "UnDelegateResourceContract"):
        receiver = str(value["receiver_address"])
        amount = _int(value, "balance")
        if kind_of == "UnDelegateResourceContract":
            return (row(0, "undelegate", resource, amount, receiver),)
        lock = bool(value.get("lock", False))
        period = _int(value, "lock_period")
        effective = period if period > 0 else (DEFAULT_LOCK_PERIOD if lock else 0)
        return (row(0, "delegate", resource, amount, receiver, lock, effective),)
    return ()


def _cancel_rows(tx: Tx, row: Callable[..., TruthRow]) -> tuple[TruthRow, ...]:
    rows: list[TruthRow] = []
    if tx.success:
        cancelled = dict(tx.info.cancel_unfreeze or ())
        for resource in CANCEL_ROW_ORDER:
            if cancelled.get(resource, 0) > 0:
                rows.append(row(len(rows), "cancel_all_unfreeze", resource, cancelled[resource]))
        if tx.info.withdraw_expire_amount > 0:
            rows.append(row(len(rows), "withdraw_expire_unfreeze", None, tx.info.withdraw_expire_amount))
    if not rows:
        rows.append(row(0, "cancel_all_unfreeze", None, 0))
    return tuple(rows)


def _int(value: dict[str, object], key: str) -> int:
    return int(str(value.get(key, 0)))


def truth_rows(
    entries: Iterable[tuple[Block, Tx]],
    accounts: frozenset[str],
    solid: int,
    book: AddressBook,
    orphaned: bool = False,
) -> list[dict[str, object]]:
    """/sim/truth operations for `accounts` (hex): rows they own, plus delegations they receive.
    A row matching two accounts (tracked-to-tracked delegation) is listed once. With `orphaned`,
    `entries` are transactions a fork removed for good, listed with the block they were last in."""
    out: list[dict[str, object]] = []
    for block, tx in entries:
        status = ("confirmed" if block.number <= solid else "pending") if tx.success else "failed"
        if orphaned:
            status = "orphaned"
        for r in tx.rows:
            if r.owner not in accounts and r.receiver not in accounts:
                continue
            out.append(
                {
                    "tx_id": tx.tx_id,
                    "op_index": r.op_index,
                    "block_num": block.number,
                    "block_time_ms": block.timestamp,
                    "kind": r.kind,
                    "contract_type": r.contract_type,
                    "owner_address": book.b58(r.owner),
                    "receiver_address": book.b58(r.receiver) if r.receiver else None,
                    "resource": r.resource,
                    "amount": r.amount,
                    "lock": r.lock,
                    "lock_period": r.lock_period,
                    "status": status,
                }
            )
    return out
