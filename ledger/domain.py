"""Domain types shared by the listener, the workers and the web app.

An `Operation` is one ledger row to be: the listener parses it out of a block, sends it as a
Dramatiq message (`to_message()`), and a worker rebuilds it (`from_message()`) and upserts it.
Its identity on chain is `(tx_id, op_index)`: most transactions yield one operation (index 0), but
an UnfreezeBalanceV2 that auto-withdraws, or a CancelAllUnfreezeV2, yields several.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# java-tron ResourceCode, by enum number (TronGrid v1 renders V1 `resource` as a number).
RESOURCES: tuple[str, ...] = ("BANDWIDTH", "ENERGY", "TRON_POWER")

# Operation kinds, and which table each one lands in.
FREEZE = "freeze"
UNFREEZE = "unfreeze"
WITHDRAW = "withdraw_expire_unfreeze"
CANCEL = "cancel_all_unfreeze"
DELEGATE = "delegate"
UNDELEGATE = "undelegate"
STAKE_KINDS = frozenset({FREEZE, UNFREEZE, WITHDRAW, CANCEL})
DELEGATE_KINDS = frozenset({DELEGATE, UNDELEGATE})

# Record status. A record only moves forward: pending -> confirmed; failed is final.
PENDING = "pending"
CONFIRMED = "confirmed"
FAILED = "failed"
STATUSES = frozenset({PENDING, CONFIRMED, FAILED})

# What the active listener is doing (listener/streamer.py sets it, the heartbeat stores it, the
# monitor reports it).
LISTENER_STARTING = "starting"  # no cycle finished yet
LISTENER_FOLLOWING = "following"  # at the node's head
LISTENER_CATCHING_UP = "catching_up"  # reading blocks the node has had for a while
LISTENER_NODE_BEHIND = "node_behind"  # the node's head is below the checkpoint: nothing to read until it passes
LISTENER_NODE_UNREACHABLE = "node_unreachable"  # requests to the node fail
LISTENER_RATE_LIMITED = "rate_limited"  # the node (HTTP 429/403) or the shared request budget holds requests back
LISTENER_FAILING = "failing"  # cycles fail otherwise (PostgreSQL, the broker, a node answer that does not add up)
LISTENER_STATES = (
    LISTENER_STARTING,
    LISTENER_FOLLOWING,
    LISTENER_CATCHING_UP,
    LISTENER_NODE_BEHIND,
    LISTENER_NODE_UNREACHABLE,
    LISTENER_RATE_LIMITED,
    LISTENER_FAILING,
)
# The states in which its head and checkpoint figures are current.
LISTENER_READING = frozenset({LISTENER_STARTING, LISTENER_FOLLOWING, LISTENER_CATCHING_UP})

# Chain constants: BLOCK_PRODUCED_INTERVAL (common/.../config/Parameter.java), the 3-day default lock
# (DelegateResourceActuator: lock_period 0 means 86 400 blocks), TRX_PRECISION.
BLOCK_INTERVAL_MS = 3000
DEFAULT_LOCK_PERIOD_BLOCKS = 86_400  # a lock without lock_period lasts 3 days
SUN_PER_TRX = 1_000_000
INT64_MAX = 2**63 - 1  # protobuf int64 / PostgreSQL BIGINT: every amount, block number and id fits

# Contract type names as java-tron prints them (`raw_data.contract[0].type`; Tron.proto ContractType).
FREEZE_V1 = "FreezeBalanceContract"
UNFREEZE_V1 = "UnfreezeBalanceContract"
FREEZE_V2 = "FreezeBalanceV2Contract"
UNFREEZE_V2 = "UnfreezeBalanceV2Contract"
WITHDRAW_EXPIRE = "WithdrawExpireUnfreezeContract"
DELEGATE_RESOURCE = "DelegateResourceContract"
UNDELEGATE_RESOURCE = "UnDelegateResourceContract"
CANCEL_ALL_UNFREEZE = "CancelAllUnfreezeV2Contract"


class PayloadError(ValueError):
    """A message or chain object that can never be processed (a poison message)."""


@dataclass(frozen=True, slots=True)
class Operation:
    tx_id: str  # 64 lowercase hex chars, no 0x
    op_index: int  # position of this row among the rows of one transaction
    block_num: int
    block_id: str
    tx_index: int  # position of the transaction in its block
    block_time_ms: int  # block_header.raw_data.timestamp, not the transaction's
    contract_type: str  # e.g. "FreezeBalanceV2Contract"
    kind: str  # one of STAKE_KINDS | DELEGATE_KINDS
    owner_address: str  # base58 T...
    resource: str | None  # one of RESOURCES; None for withdraw, and cancel with nothing cancelled
    amount: int  # sun, exact
    receiver_address: str | None = None  # delegations only (base58)
    lock: bool = False
    lock_period: int = 0  # blocks; DEFAULT_LOCK_PERIOD_BLOCKS when locked without one
    status: str = PENDING
    contract_ret: str | None = None  # ret[0].contractRet as the node gave it (None if absent)
    # The parent block's header timestamp: java-tron's "now" for this block's transactions (lock
    # ends, unfreeze expire times and withdraw maturity are computed from it, see ledger.store.positions).
    # None when unknown: then the block's own time stands in (a lock or lot then ends one slot
    # late, never early); the listener always knows it, the account-history backfill estimates it.
    parent_time_ms: int | None = None

    @property
    def table(self) -> str:
        return "delegate_records" if self.kind in DELEGATE_KINDS else "stake_records"

    @property
    def now_ms(self) -> int:
        """java-tron's "now" for this transaction: the parent block's time (Manager.processBlock)."""
        return self.block_time_ms if self.parent_time_ms is None else self.parent_time_ms

    @property
    def lock_expire_time_ms(self) -> int | None:
        if not self.lock:
            return None
        return self.now_ms + self.lock_period * BLOCK_INTERVAL_MS

    def with_status(self, status: str) -> Operation:
        return _replace(self, status=status)

    def to_message(self) -> dict[str, Any]:
        # Every field is a scalar: a plain read, not asdict()'s recursive deep copy (which was a
        # visible share of the listener's time at catch-up rates).
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_message(cls, payload: Any) -> Operation:
        """Rebuild and validate an operation from a message; PayloadError if it is not one."""
        if not isinstance(payload, dict):
            raise PayloadError(f"operation payload must be an object, got {type(payload).__name__}")
        unknown = payload.keys() - _FIELD_SET
        if unknown:
            raise PayloadError(f"unknown operation fields: {sorted(unknown)}")
        try:
            op = cls(**payload)
        except TypeError as exc:
            raise PayloadError(f"bad operation payload: {exc}") from None
        op.validate()
        return op

    def validate(self) -> None:
        problems = []
        if not (isinstance(self.tx_id, str) and len(self.tx_id) == 64 and _is_hex(self.tx_id)):
            problems.append(f"tx_id {self.tx_id!r} is not 64 hex chars")
        for name in ("op_index", "block_num", "tx_index", "block_time_ms", "amount", "lock_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} {value!r} is not a non-negative integer")
        if self.parent_time_ms is not None and (
            not isinstance(self.parent_time_ms, int)
            or isinstance(self.parent_time_ms, bool)
            or not 0 <= self.parent_time_ms <= self.block_time_ms
        ):
            problems.append(f"parent_time_ms {self.parent_time_ms!r} is not a time at or before the block's")
        if self.kind not in _KINDS:
            problems.append(f"kind {self.kind!r} is unknown")
        if self.resource is not None and self.resource not in RESOURCES:
            problems.append(f"resource {self.resource!r} is unknown")
        if self.status not in STATUSES:
            problems.append(f"status {self.status!r} is unknown")
        if not (isinstance(self.owner_address, str) and self.owner_address.startswith("T")):
            problems.append(f"owner_address {self.owner_address!r} is not base58")
        if self.kind in DELEGATE_KINDS and not (
            isinstance(self.receiver_address, str) and self.receiver_address.startswith("T")
        ):
            problems.append(f"receiver_address {self.receiver_address!r} is not base58")
        if not isinstance(self.lock, bool):
            problems.append(f"lock {self.lock!r} is not a bool")
        if problems:
            raise PayloadError("; ".join(problems))


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Operation))
_FIELD_SET = frozenset(_FIELD_NAMES)
_KINDS = STAKE_KINDS | DELEGATE_KINDS


def _replace(op: Operation, **changes: Any) -> Operation:
    values = asdict(op)
    values.update(changes)
    return Operation(**values)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return text == text.lower()
