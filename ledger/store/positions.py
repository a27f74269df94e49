"""Positions as java-tron keeps them: per account and resource, what is staked, delegated (locked and
unlocked, per receiver), unstaking and withdrawable, replayed from the ledger's records by the
chain's own rules, on top of an opening state read from the chain.

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
is clamped at zero and the shortfall kept as drift, shown apart, never as a balance.

Storage (sql/007_positions.sql): `position_openings` holds the opening state of an account at a
block; `positions` holds the state folded through a block at or below the solidified head (forks
never reach there); a read replays the few records above it (the pending tail), so it costs
O(receivers + tail), not O(history), and a fork only ever changes the tail. A record that arrives
late, at or below the folded block, drops the folded state, which the next fold rebuilds from the
opening: out-of-order delivery costs time, never correctness.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from ledger.chain.account import AccountState, DelegatedResource
from ledger.domain import (
    BLOCK_INTERVAL_MS,
    CANCEL,
    CANCEL_ALL_UNFREEZE,
    DELEGATE,
    FREEZE,
    FREEZE_V1,
    INT64_MAX,
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
LEGACY_CONTRACTS = frozenset({FREEZE_V1, UNFREEZE_V1})


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
    legacy_v1: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))
    pairs: dict[tuple[str, str], Pair] = field(default_factory=dict)  # (receiver, resource)
    lots: list[Lot] = field(default_factory=list)
    drift: dict[str, int] = field(default_factory=dict)  # what -> sun the arithmetic was short of

    # -- JSON (compact: the state of an account with 500 receivers is read on every summary) -------

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "b": self.block_num,
                "t": self.time_ms,
                "s": self.staked,
                "v1": self.legacy_v1,
                "p": [[r, res, p.unlocked, p.locked, p.expire_ms] for (r, res), p in self.pairs.items()],
                "l": [[lot.resource, lot.amount, lot.expire_ms] for lot in self.lots],
                "d": self.drift,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Position:
        obj = orjson.loads(text)
        return cls(
            block_num=obj["b"],
            time_ms=obj["t"],
            staked=obj["s"],
            legacy_v1=obj["v1"],
            pairs={(r, res): Pair(u, lk, e) for r, res, u, lk, e in obj["p"]},
            lots=[Lot(res, a, e) for res, a, e in obj["l"]],
            drift=obj["d"],
        )

    # -- arithmetic that never goes below zero --------------------------------------------------

    def _take(self, balances: dict[str, int], res: str, amount: int, what: str) -> None:
        have = balances[res]
        if amount > have:
            self._drift(f"{res}.{what}", amount - have)
            amount = have
        balances[res] = have - amount

    def _drift(self, what: str, amount: int) -> None:
        if amount:
            self.drift[what] = self.drift.get(what, 0) + amount

    def pair(self, receiver: str, res: str) -> Pair:
        found = self.pairs.get((receiver, res))
        if found is None:
            found = self.pairs[(receiver, res)] = Pair()
        return found


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
    elif r.contract_type in LEGACY_CONTRACTS:
        # Stake 1.0 (FreezeBalanceActuator / UnfreezeBalanceActuator): its own balance, no lots.
        if r.kind == FREEZE:
            pos.legacy_v1[res] += r.amount
        elif r.kind == UNFREEZE:
            pos._take(pos.legacy_v1, res, r.amount, "legacy_v1")
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
            pos._drift(f"{res}.delegated.{r.receiver}", r.amount - pair.unlocked)
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
    matured = [lot for lot in pos.lots if lot.expire_ms <= now]
    pos.lots = [lot for lot in pos.lots if lot.expire_ms > now]
    # The chain's withdrawn amount checks the ledger's lots; lots the ledger never saw show here.
    pos._drift("withdraw", abs(chain_amount - sum(lot.amount for lot in matured)))


def _cancel_all(pos: Position, now: int, withdrawn: int, restaked: dict[str, int]) -> None:
    mine = dict.fromkeys(RESOURCES, 0)
    for lot in pos.lots:
        if lot.expire_ms > now:
            mine[lot.resource] += lot.amount
    _withdraw_matured(pos, now, withdrawn)
    pos.lots = []
    for res in RESOURCES:
        pos.staked[res] += mine[res]
        # The chain's re-staked amount is the truth for the balance; a difference is drift.
        chain = restaked.get(res, 0)
        if chain != mine[res]:
            pos._drift(f"{res}.cancel", abs(chain - mine[res]))
            pos.staked[res] += chain - mine[res]
            if pos.staked[res] < 0:
                pos.staked[res] = 0


# -- opening state from the chain ---------------------------------------------------------------------


def opening(account: AccountState, delegations: Iterable[DelegatedResource], block_num: int) -> Position:
    """The position the chain reports (getaccount + getdelegatedresourcev2 per receiver) at a block."""
    pos = Position(block_num=block_num)
    pos.staked = dict(account.frozen_v2)
    pos.legacy_v1 = dict(account.frozen_v1)
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
        pos._drift(f"{res}.opening_delegated", abs(account.delegated_v2.get(res, 0) - sums[res]))
    return pos


# -- what a reader sees ---------------------------------------------------------------------------------


def _ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def view(pos: Position, now_ms: int) -> tuple[dict[str, Any], int | None]:
    """Per-resource figures at chain time `now_ms` (the next block's "now"), and the next time a
    figure changes with no write (a lock ending or a lot maturing), in ms, if any.

    A lock with expire time < now is shown unlocked (the next delegate/undelegate merges it); a lot
    with expire time <= now is withdrawable (a withdraw in the next block takes it)."""
    out: dict[str, Any] = {}
    for res in RESOURCES:
        out[res] = {
            "staked": pos.staked[res],
            "available": pos.staked[res],
            "delegated": {"total": 0, "locked": 0, "unlocked": 0, "receivers": []},
            "unstaking": {"total": 0, "lots": []},
            "withdrawable": 0,
            "legacy_v1": pos.legacy_v1[res],
        }
    changes: list[int] = []
    for (receiver, res), pair in sorted(pos.pairs.items()):
        locked, unlocked, end = pair.locked, pair.unlocked, pair.expire_ms
        if locked and end < now_ms:
            unlocked, locked = unlocked + locked, 0
        elif locked:
            changes.append(end + 1)
        d = out[res]["delegated"]
        d["total"] += locked + unlocked
        d["locked"] += locked
        d["unlocked"] += unlocked
        d["receivers"].append(
            {
                "receiver_address": receiver,
                "locked": locked,
                "unlocked": unlocked,
                "lock_end": _ms_time(end) if locked else None,
            }
        )
    for lot in sorted(pos.lots, key=lambda lot: (lot.expire_ms, lot.resource)):
        if lot.expire_ms <= now_ms:
            out[lot.resource]["withdrawable"] += lot.amount
        else:
            changes.append(lot.expire_ms)
            u = out[lot.resource]["unstaking"]
            u["total"] += lot.amount
            u["lots"].append({"amount": lot.amount, "expire_time": _ms_time(lot.expire_ms)})
    return out, (min(changes) if changes else None)


# -- storage ----------------------------------------------------------------------------------------------

_ROW_COLUMNS = (
    "tx_id, op_index, block_num, tx_index,"
    " (extract(epoch FROM block_time) * 1000)::bigint AS block_time_ms, parent_time_ms, contract_type,"
    " operation_type, resource, amount"
)
_ROWS = f"""
SELECT {_ROW_COLUMNS}, NULL::text AS receiver, false AS lock, 0::bigint AS lock_period
FROM stake_records
WHERE owner_address = %(a)s AND block_num > %(lo)s AND block_num <= %(hi)s AND status = ANY(%(statuses)s)
UNION ALL
SELECT {_ROW_COLUMNS}, receiver_address, lock, lock_period
FROM delegate_records
WHERE owner_address = %(a)s AND block_num > %(lo)s AND block_num <= %(hi)s AND status = ANY(%(statuses)s)
ORDER BY block_num, tx_index, tx_id, op_index
"""
_LIVE = ["pending", "confirmed"]  # failed moved nothing; orphaned left the chain


# The summary's start: the start state (folded, else opening) and the checkpoint, in one statement.
# The tail is a second statement with the start block as a plain parameter: as a subquery value
# the planner cannot see how selective `block_num > x` is and scans the whole table.
_SUMMARY_START = """
WITH base AS (
    SELECT block_num, state FROM (
        SELECT 0 AS k, block_num, state FROM positions WHERE address = %(a)s
        UNION ALL SELECT 1, block_num, state FROM position_openings WHERE address = %(a)s
    ) b ORDER BY k LIMIT 1
)
SELECT (SELECT state::text FROM base), (SELECT block_num FROM base),
       (SELECT block_num FROM listener_checkpoint WHERE name = %(c)s),
       (SELECT block_time_ms FROM listener_checkpoint WHERE name = %(c)s)
"""


def load_rows(conn: psycopg.Connection, address: str, after: int, upto: int = INT64_MAX) -> list[Row]:
    """The account's live records as owner in blocks after..upto, in chain order."""
    cur = conn.execute(_ROWS, {"a": address, "lo": after, "hi": upto, "statuses": _LIVE})
    return [Row(*values) for values in cur.fetchall()]


def start_state(conn: psycopg.Connection, address: str) -> Position:
    """The folded state if there is one, else the opening state, else empty."""
    row = conn.execute(
        "SELECT 0 AS k, state::text, block_num FROM positions WHERE address = %(a)s"
        " UNION ALL SELECT 1, state::text, block_num FROM position_openings WHERE address = %(a)s ORDER BY k LIMIT 1",
        {"a": address},
    ).fetchone()
    return _start(row[1], row[2]) if row else Position()


def _start(state: str, block_num: int) -> Position:
    # The row's block_num, not the state's own: a fold moves it past blocks with nothing to apply.
    pos = Position.from_json(state)
    pos.block_num = block_num
    return pos


def current(conn: psycopg.Connection, address: str, unfreeze_delay_ms: int) -> Position:
    """The account's position after every live record: folded state + the tail replayed."""
    pos = start_state(conn, address)
    return replay(pos, load_rows(conn, address, pos.block_num), unfreeze_delay_ms)


# Records of one owner in (folded block, solid block]: the accounts a fold has work for.
_HAS_RECORDS = """
EXISTS (SELECT 1 FROM stake_records r WHERE r.owner_address = {a} AND r.block_num > {lo} AND r.block_num <= {hi})
OR EXISTS (SELECT 1 FROM delegate_records r WHERE r.owner_address = {a} AND r.block_num > {lo} AND r.block_num <= {hi})
"""
# Accounts with nothing new only move their folded block: one statement for all of them.
_ADVANCE_IDLE = f"""
UPDATE positions p SET block_num = %(solid)s
WHERE p.block_num < %(solid)s AND NOT ({_HAS_RECORDS.format(a="p.address", lo="p.block_num", hi="%(solid)s")})
"""
_TO_FOLD = """
SELECT a.address FROM pool_accounts a LEFT JOIN positions p ON p.address = a.address
WHERE p.address IS NULL OR p.block_num < %(solid)s ORDER BY a.address
"""


def fold(conn: psycopg.Connection, solid_block: int, unfreeze_delay_ms: int) -> list[str]:
    """Move every pool account's folded state up to the solidified block; return the accounts whose
    state was replayed. Call it holding the lock that excludes persists: a record arriving meanwhile
    must see the new folded block to drop it. Accounts with no record in the range cost nothing but
    one shared UPDATE, so a confirmation every block stays cheap with many pool accounts."""
    conn.execute(_ADVANCE_IDLE, {"solid": solid_block})
    accounts = [a for (a,) in conn.execute(_TO_FOLD, {"solid": solid_block}).fetchall()]
    for address in accounts:
        pos = start_state(conn, address)
        if pos.block_num >= solid_block:
            continue
        replay(pos, load_rows(conn, address, pos.block_num, solid_block), unfreeze_delay_ms)
        pos.block_num = solid_block
        conn.execute(
            "INSERT INTO positions (address, block_num, state) VALUES (%s, %s, %s)"
            " ON CONFLICT (address) DO UPDATE SET block_num = EXCLUDED.block_num, state = EXCLUDED.state,"
            " updated_at = now()",
            (address, solid_block, pos.to_json().decode()),
        )
    return accounts


def drop_folded_at_or_after(conn: psycopg.Connection, address: str, block_num: int) -> None:
    """A record for a block already folded arrived late: the folded state lacks it, so drop it."""
    conn.execute("DELETE FROM positions WHERE address = %s AND block_num >= %s", (address, block_num))


def store_opening(conn: psycopg.Connection, address: str, pos: Position) -> None:
    """Make `pos` the account's opening state; the folded state is rebuilt from it."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO position_openings (address, block_num, state) VALUES (%s, %s, %s)"
            " ON CONFLICT (address) DO UPDATE SET block_num = EXCLUDED.block_num, state = EXCLUDED.state,"
            " taken_at = now()",
            (address, pos.block_num, pos.to_json().decode()),
        )
        conn.execute("DELETE FROM positions WHERE address = %s", (address,))


# -- the summary ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    data: dict[str, Any]
    drift: dict[str, int]
    next_change_ms: int | None  # chain time when a lock ends or a lot matures (no write needed)
    as_of_time_ms: int


def read_summary(conn: psycopg.Connection, address: str, unfreeze_delay_ms: int, checkpoint: str = "main") -> Summary:
    """The account's figures as of the listener's checkpoint: O(receivers + lots + pending tail)."""
    # One snapshot for both statements, so the folded state, the tail and the checkpoint agree.
    fresh = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if fresh:  # else a caller's transaction (a savepoint here) decides
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        found = conn.execute(_SUMMARY_START, {"a": address, "c": checkpoint}).fetchone()
        assert found is not None  # scalar subqueries: always one row
        state, base_block, mark_block, mark_time = found
        pos = _start(state, base_block) if state is not None else Position()
        rows = load_rows(conn, address, pos.block_num)
    mark = None if mark_block is None else (mark_block, mark_time)
    replay(pos, rows, unfreeze_delay_ms)
    as_of_block = max(pos.block_num, mark[0] if mark else -1)
    if mark is not None and mark[1] is not None and mark[0] >= pos.block_num:
        as_of_ms = int(mark[1])
    elif pos.time_ms:
        as_of_ms = pos.time_ms
    else:
        as_of_ms = int(datetime.now(UTC).timestamp() * 1000)
    # Chain time of the checkpoint's block: the next block's "now". A lock ending before it shows
    # unlocked and a lot expiring at or before it shows withdrawable, as the next block would see.
    figures, next_change = view(pos, as_of_ms)
    data = {
        "owner_address": address,
        "as_of_block": as_of_block,
        "as_of_time": _ms_time(as_of_ms),
        "resources": figures,
        "withdrawable_now": sum(figures[res]["withdrawable"] for res in RESOURCES),
    }
    return Summary(data, dict(pos.drift), next_change, as_of_ms)
