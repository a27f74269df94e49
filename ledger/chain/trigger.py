"""Event-plugin (ZeroMQ / Kafka) `blockTrigger` and `transactionTrigger` messages
(java-tron docs/architecture/event.md; TransactionLogTrigger.java).

Only the fields a poller needs to notice new blocks and rollbacks are kept; a transaction trigger
carries no resource or lock, so stake operations are still parsed from the block itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.chain.values import ChainDataError, as_object, hex_id, opt_bool, req_int, req_str

BLOCK_TRIGGER = "blockTrigger"
TRANSACTION_TRIGGER = "transactionTrigger"


@dataclass(frozen=True, slots=True)
class BlockTrigger:
    block_number: int
    block_hash: str
    timestamp_ms: int
    latest_solidified_block_number: int
    removed: bool = False  # true when java-tron >= 4.8.2 re-emits a rolled-back block


@dataclass(frozen=True, slots=True)
class TransactionTrigger:
    tx_id: str
    contract_type: str
    block_number: int
    block_hash: str
    timestamp_ms: int
    latest_solidified_block_number: int
    removed: bool = False


def parse_trigger(obj: Any) -> BlockTrigger | TransactionTrigger:
    """Parse a trigger message by its `triggerName`; ChainDataError for others or bad fields."""
    obj = as_object(obj, "trigger")
    name = obj.get("triggerName")
    if name not in (BLOCK_TRIGGER, TRANSACTION_TRIGGER):
        raise ChainDataError(f"unsupported triggerName {name!r}")
    where = name
    block_number = req_int(obj, "blockNumber", where)
    block_hash = hex_id(obj.get("blockHash"), f"{where}.blockHash")
    timestamp_ms = req_int(obj, "timeStamp", where)
    solidified = req_int(obj, "latestSolidifiedBlockNumber", where)
    # `removed` exists only from java-tron 4.8.2 on; older nodes never retract a trigger.
    removed = opt_bool(obj, "removed", where)
    if name == BLOCK_TRIGGER:
        return BlockTrigger(block_number, block_hash, timestamp_ms, solidified, removed)
    return TransactionTrigger(
        tx_id=hex_id(obj.get("transactionId"), f"{where}.transactionId"),
        contract_type=req_str(obj, "contractType", where),
        block_number=block_number,
        block_hash=block_hash,
        timestamp_ms=timestamp_ms,
        latest_solidified_block_number=solidified,
        removed=removed,
    )
