"""Positions as java-tron keeps them: per account and resource, what is staked, delegated (locked and
unlocked, per receiver), unstaking and withdrawable, replayed from the ledger's records by the
chain's own rules, on top of an opening state read from the chain. Pure: no I/O (storage is
ledger/store/positions.py, what a reader sees is web/positions.py).

The rules (java-tron sources, cited where each is applied):

- "Now" inside a block is the PARENT block's header timestamp: `Manager.processBlock` runs the
  transactions before `updateDynamicProperties(block)`, so every actuator's
  `getLatestBlockHeaderTimestamp()` is the previous block's time
  (framework/src/main/java/org/tron/core/db/Manager.java).
- `frozenV2` excludes delegated-out stake: DelegateResource moves the balance out of it,
  UnDelegateResource moves it back (actuator/.../DelegateResourceActuator.java,
  UnDelegateResourceActuator.java).
- One unlocked and one locked record per (from, to); a new lock adds to the locked balance and
  REPLACES its expire time (DelegateResourceActuator.java, DelegatedResourceCapsule).
- Before every delegate and undelegate, a lock whose expire time is < now is merged into the
  unlocked record (chainbase/.../store/DelegatedResourceStore.java `unLockExpireResource`).
  Nothing else merges them, so a reader treats an expired lock as unlocked.
- Undelegate takes only from the unlocked record, after that merge (UnDelegateResourceActuator).
- UnfreezeBalanceV2 withdraws the matured lots first, then opens a lot expiring at now + the
  unfreeze delay (UnfreezeBalanceV2Actuator.java); WithdrawExpireUnfreeze takes the lots whose
  expire time is <= now; CancelAllUnfreezeV2 withdraws the matured lots and re-stakes the others
  (WithdrawExpireUnfreezeActuator.java, CancelAllUnfreezeV2Actuator.java).

An account's history may begin before the ledger's: a figure the arithmetic would take below zero
is clamped at zero and what it was short of kept as the account's shortfall, shown apart, never as a
balance (a difference with the chain's own account state is state reconciliation's `drift`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from ledger.chain.account import AccountState, DelegatedResource
from ledger.domain import (
    BLOCK_INTERVAL_MS,
    CANCEL,
    CANCEL_ALL_UNFREEZE,
    DELEGATE,
    FREEZE,
    FREEZE_V1,
    RESOURCES,
    UNDELEGATE,
    UNFREEZE,
    UNFREEZE_V1,
    UNFREEZE_V2,
    WITHDRAW,
    Operation,
)

BANDWIDTH, ENERGY, TRON_POWER = RESOURCES
DELEGABLE = (BANDWIDTH, ENERGY)
STAKE_V1_CONTRACTS = frozenset({FREEZE_V1, UNFREEZE_V1})
# Shortfall keys of folded states stored under an earlier name of the V1 balance.
_SHORTFALL_KEYS = {f"{res}.legacy_v1": f"{res}.staked_v1" for res in RESOURCES}


@dataclass(slots=True)
class Pair:
    """The two delegation records of one (from, to, resource)."""

    unlocked: int = 0
    locked: int = 0
    expire_ms: int = 0  # lock end of the locked record; 0 when it holds nothing

    def merge_expired(self, now_ms: int) -> None:
        # DelegatedResourceStore.unLockExpireResource: expire time < now moves the lock over.
        if self.locked and self.expire_ms < now_ms:
            self.unlocked += self.locked
            self.locked, self.expire_ms = 0, 0


@dataclass(slots=True)
class Lot:
    resource: str
    amount: int
    expire_ms: int


@dataclass
class Position:
    """One account's state after block `block_num` (-1: before any block)."""

    block_num: int = -1
    time_ms: int = 0  # timestamp of the last block applied (0: none), the data's age without a checkpoint
    staked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))  # frozenV2
    staked_v1: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))
    pairs: dict[tuple[str, str], Pair] = field(default_factory=dict)  # (receiver, resource)
    lots: list[Lot] = field(default_factory=list)
    shortfall: dict[str, int] = field(default_factory=dict)  # what -> sun the arithmetic was short of

    # -- JSON (compact: the state of an account with 500 receivers is read on every summary) -------

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "b": self.block_num,
                "t": self.time_ms,
                "s": self.staked,
                "v1": self.staked_v1,
                "p": [[r, res, p.unlocked, p.locked, p.expire_ms] for (r, res), p in self.pairs.items()],
                "l": [[lot.resource, lot.amount, lot.expire_ms] for lot in self.lots],
                "d": self.shortfall,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Position:
        obj = orjson.loads(text)
        return cls(
            block_num=obj["b"],
            time_ms=obj["t"],
            staked=obj["s"],
            staked_v1=obj["v1"],
            pairs={(r, res): Pair(u, lk, e) for r, res, u, lk, e in obj["p"]},
            lots=[Lot(res, a, e) for res, a, e in obj["l"]],
            shortfall={_SHORTFALL_KEYS.get(k, k): v for k, v in obj["d"].items()},
        )

    # -- arithmetic that never goes below zero --------------------------------------------------

    def _take(self, balances: dict[str, int], res: str, amount: int, what: str) -> None:
        have = balances[res]
        if amount > have:
            self._short(f"{res}.{what}", amount - have)
            amount = have
        balances[res] = have - amount

    def _short(self, what: str, amount: int) -> None:
        if amount:
            self.shortfall[what] = self.shortfall.get(what, 0) + amount

    def pair(self, receiver: str, res: str) -> Pair:
        found = self.pairs.get((receiver, res))
        if found is None:
            found = self.pairs[(receiver, res)] = Pair()
        return found


# -- unfreeze lots and chain time ----------------------------------------------------------------

# Stored statuses of a lot no withdraw or cancel has settled ('withdrawable' is never written;
# rows of older releases may still hold it).
OPEN_LOT_STATUSES = ("pending", "withdrawable")


def withdrawable(expire_ms: int, now_ms: int) -> bool:
    """A lot can be withdrawn once its expire time is at or before "now" (WithdrawExpireUnfreeze
    and UnfreezeBalanceV2 take the lots with expire time <= now, CancelAllUnfreezeV2 re-stakes
    the others). Every view of a lot (summary, records page, the old path) asks this, at chain time."""
    return expire_ms <= now_ms


def lot_status(stored: str, expire_ms: int, now_ms: int) -> str:
    """A stored lot's status at chain time `now_ms`: an open lot is `withdrawable` or `pending` by its
    expire time; `withdrawn`, `cancelled` and `orphaned` are final."""
    if stored not in OPEN_LOT_STATUSES:
        return stored
    return "withdrawable" if withdrawable(expire_ms, now_ms) else "pending"


def chain_time_ms(checkpoint_time_ms: int | None, data_time_ms: int = 0) -> int:
    """Chain time, the "now" the next block's transactions will see: the newest block time the
    ledger knows (the listener checkpoint's, or the newest block of the data read), and the wall
    clock only where it knows none. Wall clock and chain disagree whenever the ledger is behind,
    the node's clock is off or the chain is not mainnet; a figure that depends on time follows
    the chain."""
    known = max(checkpoint_time_ms or 0, data_time_ms)
    return known if known else int(time.time() * 1000)


# -- replay -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """What replay needs of one stored record (an Operation, or a row of stake/delegate_records)."""

    tx_id: str
    op_index: int
    block_num: int
    tx_index: int
    block_time_ms: int
    parent_time_ms: int | None  # None when unknown: the block's own time stands in (Operation.now_ms)
    contract_type: str
    kind: str
    resource: str | None
    amount: int
    receiver: str | None = None
    lock: bool = False
    lock_period: int = 0

    @property
    def now_ms(self) -> int:
        return self.block_time_ms if self.parent_time_ms is None else self.parent_time_ms


def row_of(op: Operation) -> Row:
    return Row(
        op.tx_id,
        op.op_index,
        op.block_num,
        op.tx_index,
        op.block_time_ms,
        op.parent_time_ms,
        op.contract_type,
        op.kind,
        op.resource,
        op.amount,
        op.receiver_address,
        op.lock,
        op.lock_period,
    )


def transactions(rows: Iterable[Row]) -> Iterator[list[Row]]:
    """Rows in chain order, grouped by transaction (a transaction's rows are applied together)."""
    group: list[Row] = []
    for row in rows:
        if group and (row.block_num, row.tx_index, row.tx_id) != (
            group[0].block_num,
            group[0].tx_index,
            group[0].tx_id,
        ):
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def replay(pos: Position, rows: Iterable[Row], unfreeze_delay_ms: int) -> Position:
    """Apply rows (chain order, non-failed, canonical) past `pos.block_num`; returns `pos`."""
    start = pos.block_num
    for tx in transactions(rows):
        if tx[0].block_num <= start:
            continue  # already in the opening or folded state
        apply_transaction(pos, tx, unfreeze_delay_ms)
    return pos


def apply_transaction(pos: Position, rows: Sequence[Row], unfreeze_delay_ms: int) -> None:
    """One transaction's effect, by the rules in this module's docstring."""
    first = rows[0]
    now = first.now_ms
    ctype = first.contract_type
    if ctype == UNFREEZE_V2:
        # UnfreezeBalanceV2Actuator: matured lots are withdrawn first, then the new lot opens.
        withdrawn = sum(r.amount for r in rows if r.kind == WITHDRAW)
        _withdraw_matured(pos, now, withdrawn)
        for r in rows:
            if r.kind == UNFREEZE and r.resource is not None:
                pos._take(pos.staked, r.resource, r.amount, "staked")
                pos.lots.append(Lot(r.resource, r.amount, now + unfreeze_delay_ms))
    elif ctype == CANCEL_ALL_UNFREEZE:
        withdrawn = sum(r.amount for r in rows if r.kind == WITHDRAW)
        restaked = {r.resource: r.amount for r in rows if r.kind == CANCEL and r.resource is not None}
        _cancel_all(pos, now, withdrawn, restaked)
    else:
        for r in rows:
            _apply_row(pos, r, now)
    pos.block_num = max(pos.block_num, first.block_num)
    pos.time_ms = max(pos.time_ms, first.block_time_ms)


def _apply_row(pos: Position, r: Row, now: int) -> None:
    res = r.resource
    if r.kind == WITHDRAW:  # WithdrawExpireUnfreezeContract
        _withdraw_matured(pos, now, r.amount)
    elif res is None:
        return
    elif r.contract_type in STAKE_V1_CONTRACTS:
        # Stake 1.0 (FreezeBalanceActuator / UnfreezeBalanceActuator): its own balance, no lots.
        if r.kind == FREEZE:
            pos.staked_v1[res] += r.amount
        elif r.kind == UNFREEZE:
            pos._take(pos.staked_v1, res, r.amount, "staked_v1")
    elif r.kind == FREEZE:
        pos.staked[res] += r.amount
    elif r.kind == DELEGATE and r.receiver is not None:
        _merge_pair(pos, r.receiver, now)
        pos._take(pos.staked, res, r.amount, "staked")
        pair = pos.pair(r.receiver, res)
        if r.lock:
            # DelegateResourceActuator: expire = now + lockPeriod * 3 s, replacing the old one.
            pair.locked += r.amount
            pair.expire_ms = now + r.lock_period * BLOCK_INTERVAL_MS
        else:
            pair.unlocked += r.amount
    elif r.kind == UNDELEGATE and r.receiver is not None:
        _merge_pair(pos, r.receiver, now)
        pair = pos.pair(r.receiver, res)
        if r.amount > pair.unlocked:
            pos._short(f"{res}.delegated.{r.receiver}", r.amount - pair.unlocked)
            pair.unlocked = r.amount  # the chain did it, so it had it: clamp, keep the shortfall
        pair.unlocked -= r.amount
        pos.staked[res] += r.amount
        if not (pair.unlocked or pair.locked):
            del pos.pairs[(r.receiver, res)]


def _merge_pair(pos: Position, receiver: str, now: int) -> None:
    # unLockExpireResource(from, to, now) looks at both resources of the pair.
    for res in DELEGABLE:
        pair = pos.pairs.get((receiver, res))
        if pair is not None:
            pair.merge_expired(now)


def _withdraw_matured(pos: Position, now: int, chain_amount: int) -> None:
    matured = [lot for lot in pos.lots if withdrawable(lot.expire_ms, now)]
    pos.lots = [lot for lot in pos.lots if not withdrawable(lot.expire_ms, now)]
    # The chain's withdrawn amount checks the ledger's lots; lots the ledger never saw show here.
    pos._short("withdraw", abs(chain_amount - sum(lot.amount for lot in matured)))


def _cancel_all(pos: Position, now: int, withdrawn: int, restaked: dict[str, int]) -> None:
    mine = dict.fromkeys(RESOURCES, 0)
    for lot in pos.lots:
        if not withdrawable(lot.expire_ms, now):
            mine[lot.resource] += lot.amount
    _withdraw_matured(pos, now, withdrawn)
    pos.lots = []
    for res in RESOURCES:
        pos.staked[res] += mine[res]
        # The chain's re-staked amount is the truth for the balance; a difference is a shortfall.
        chain = restaked.get(res, 0)
        if chain != mine[res]:
            pos._short(f"{res}.cancel", abs(chain - mine[res]))
            pos.staked[res] += chain - mine[res]
            if pos.staked[res] < 0:
                pos.staked[res] = 0


# -- opening state from the chain ---------------------------------------------------------------------


def opening(account: AccountState, delegations: Iterable[DelegatedResource], block_num: int) -> Position:
    """The position the chain reports (getaccount + getdelegatedresourcev2 per receiver) at a block."""
    pos = Position(block_num=block_num)
    pos.staked = dict(account.frozen_v2)
    pos.staked_v1 = dict(account.frozen_v1)
    pos.lots = [Lot(lot.resource, lot.amount, lot.expire_time_ms) for lot in account.unfrozen_v2]
    sums = dict.fromkeys(DELEGABLE, 0)
    for d in delegations:
        if d.from_address != account.address:
            continue
        for res, amount, expire in (
            (BANDWIDTH, d.bandwidth, d.expire_time_for_bandwidth_ms),
            (ENERGY, d.energy, d.expire_time_for_energy_ms),
        ):
            if not amount:
                continue
            sums[res] += amount
            pair = pos.pair(d.to_address, res)
            # The locked record is the one with an expire time (the unlocked one has none).
            if expire:
                pair.locked += amount
                pair.expire_ms = max(pair.expire_ms, expire)
            else:
                pair.unlocked += amount
    for res in DELEGABLE:
        # getaccount's delegated total should be the sum of the per-receiver records.
        pos._short(f"{res}.opening_delegated", abs(account.delegated_v2.get(res, 0) - sums[res]))
    return pos
