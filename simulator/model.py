"""The in-memory chain: blocks, transactions, TransactionInfo data, and the contract schemas.

Objects here are built once by the generator and never mutated afterwards, so HTTP threads can
render them without locks, and rendered bytes can be cached by block id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

ADDR: Final = "addr"  # 21-byte address, stored as 42-char hex, rendered base58 when visible
INT: Final = "int"
ENUM: Final = "enum"  # ResourceCode, rendered as its name
BOOL: Final = "bool"
HEX: Final = "hex"  # bytes, rendered as hex in both visible modes
NAME: Final = "name"  # bytes stored as hex, rendered as text when visible (HttpSelfFormatFieldName's name fields)
VOTES: Final = "votes"  # repeated Vote {vote_address = 1 (address), vote_count = 2}

RESOURCE_CODES: Final = {"BANDWIDTH": 0, "ENERGY": 1, "TRON_POWER": 2}

# type name -> (ContractType number, value fields in proto order as (json name, field no, kind)).
# Numbers from java-tron protocol/src/main/protos/core/Tron.proto and contract/*.proto.
CONTRACT_SCHEMAS: Final[dict[str, tuple[int, tuple[tuple[str, int, str], ...]]]] = {
    "TransferContract": (1, (("owner_address", 1, ADDR), ("to_address", 2, ADDR), ("amount", 3, INT))),
    "TransferAssetContract": (
        2,
        (("asset_name", 1, NAME), ("owner_address", 2, ADDR), ("to_address", 3, ADDR), ("amount", 4, INT)),
    ),
    "VoteWitnessContract": (4, (("owner_address", 1, ADDR), ("votes", 2, VOTES))),
    "FreezeBalanceContract": (
        11,
        (
            ("owner_address", 1, ADDR),
            ("frozen_balance", 2, INT),
            ("frozen_duration", 3, INT),
            ("resource", 10, ENUM),
            ("receiver_address", 15, ADDR),
        ),
    ),
    "UnfreezeBalanceContract": (
        12,
        (("owner_address", 1, ADDR), ("resource", 10, ENUM), ("receiver_address", 15, ADDR)),
    ),
    "TriggerSmartContract": (
        31,
        (
            ("owner_address", 1, ADDR),
            ("contract_address", 2, ADDR),
            ("call_value", 3, INT),
            ("data", 4, HEX),
        ),
    ),
    "FreezeBalanceV2Contract": (
        54,
        (("owner_address", 1, ADDR), ("frozen_balance", 2, INT), ("resource", 3, ENUM)),
    ),
    "UnfreezeBalanceV2Contract": (
        55,
        (("owner_address", 1, ADDR), ("unfreeze_balance", 2, INT), ("resource", 3, ENUM)),
    ),
    "WithdrawExpireUnfreezeContract": (56, (("owner_address", 1, ADDR),)),
    "DelegateResourceContract": (
        57,
        (
            ("owner_address", 1, ADDR),
            ("resource", 2, ENUM),
            ("balance", 3, INT),
            ("receiver_address", 4, ADDR),
            ("lock", 5, BOOL),
            ("lock_period", 6, INT),
        ),
    ),
    "UnDelegateResourceContract": (
        58,
        (
            ("owner_address", 1, ADDR),
            ("resource", 2, ENUM),
            ("balance", 3, INT),
            ("receiver_address", 4, ADDR),
        ),
    ),
    "CancelAllUnfreezeV2Contract": (59, (("owner_address", 1, ADDR),)),
}

# Fields java-tron renders as base58 when visible=true (Util / HttpSelfFormatFieldName).
ADDRESS_FIELDS: Final = frozenset({"owner_address", "receiver_address", "to_address", "contract_address"})
# Bytes fields java-tron prints as text when visible (HttpSelfFormatFieldName's NAME_STRING_FIELDS).
NAME_FIELDS: Final = frozenset({"asset_name"})


def contract_value(contract_type: str, **fields: object) -> dict[str, object]:
    """The `parameter.value` dict in proto field order, with proto3 defaults left out.

    This is the one place the "absent means default" rule is applied: BANDWIDTH (enum 0),
    lock=false, lock_period=0 and zero amounts are never stored, so they are never rendered.
    """
    _, schema = CONTRACT_SCHEMAS[contract_type]
    unknown = set(fields) - {name for name, _, _ in schema}
    if unknown:
        raise ValueError(f"{contract_type} has no field(s) {sorted(unknown)}")
    value: dict[str, object] = {}
    for name, _, kind in schema:
        item = fields.get(name)
        if item is None or item == 0 or item is False or item == "":
            continue
        if kind == ENUM and RESOURCE_CODES[str(item)] == 0:
            continue
        value[name] = item
    return value


@dataclass(slots=True, frozen=True)
class Log:
    address: str  # 20-byte hex without the 41 prefix, as java-tron prints log addresses
    topics: tuple[str, ...]
    data: str


@dataclass(slots=True)
class TxInfo:
    """The TransactionInfo fields that vary per transaction (id/block fields come from context)."""

    fee: int = 0
    receipt: dict[str, int | str] = field(default_factory=dict)
    contract_result: str = ""
    contract_address: str | None = None
    logs: tuple[Log, ...] = ()
    unfreeze_amount: int = 0
    withdraw_expire_amount: int = 0
    # CancelAllUnfreezeV2 only: all three keys, zeros included, in the privatenet fixture order.
    cancel_unfreeze: tuple[tuple[str, int], ...] | None = None
    res_message: str = ""
    # internal_transactions as java-tron prints them (hash, caller_address, transferTo_address,
    # callValueInfo, note): TVM calls that moved value or called another contract.
    internal: tuple[dict[str, object], ...] = ()


@dataclass(slots=True, frozen=True)
class TruthRow:
    """One ledger operation, decomposed from a stake transaction (see simulator.truth)."""

    op_index: int
    kind: str
    contract_type: str
    owner: str  # hex
    receiver: str | None  # hex
    resource: str | None
    amount: int
    lock: bool
    lock_period: int


@dataclass(slots=True)
class Tx:
    tx_id: str
    contract_type: str
    value: dict[str, object]
    raw: bytes  # Transaction.raw protobuf bytes; txID = sha256(raw)
    ref_block_bytes: str
    ref_block_hash: str
    expiration: int
    timestamp: int | None  # client time, optional; NOT the block time
    fee_limit: int | None
    permission_id: int
    signatures: int  # how many 65-byte signatures to render (multisig has more)
    success: bool
    info: TxInfo
    rows: tuple[TruthRow, ...] = ()  # filled for stake contracts only

    @property
    def contract_ret(self) -> str:
        return "SUCCESS" if self.success else "REVERT"


@dataclass(slots=True, frozen=True)
class Block:
    number: int
    block_id: str
    parent_hash: str
    timestamp: int
    witness: str  # hex
    tx_trie_root: str
    txs: tuple[Tx, ...]
