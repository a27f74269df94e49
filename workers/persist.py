"""Persistence of operations and confirmations: plain functions over a psycopg connection.

The worker calls these on an autocommit connection; every write runs in `conn.transaction()`,
the confirm lock a statement of its own before the writes (see `_lock_confirm_shared`). Tests call
them inside an open transaction they roll back, where `conn.transaction()` is a savepoint.

Messages arrive at least once, in any order, on several workers at once, so every write is an
idempotent upsert keyed by the chain identity (tx_id, op_index), status only moves forward
(pending -> confirmed, failed and confirmed are final) and the settlement of unfreeze lots is
recomputed from the stored rows rather than applied as a delta. Two transaction-scoped advisory
locks make the concurrent cases come out the same as the sequential ones (see `_lock_*`).

A message sent under a lease term (its `fence`) is applied only if that term is still current,
checked first in the very transaction that applies it (ledger/coordination/lease.py,
`check_fence`); a stale one raises StaleTerm and changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from ledger.coordination.lease import Fence, check_fence
from ledger.domain import (
    BLOCK_INTERVAL_MS,
    CANCEL,
    DELEGATE_KINDS,
    FAILED,
    INT64_MAX,
    UNFREEZE,
    UNFREEZE_V2,
    WITHDRAW,
    Operation,
    PayloadError,
)
from ledger.store import positions

DEFAULT_UNFREEZE_DELAY = 14 * 86_400  # mainnet's unfreezeDelayDays; the worker passes the setting

# Advisory lock classes (first key of the two-int form), private to this module.
_LOCK_CONFIRM = 0x4C434F4E  # "LCON": persist (shared) vs confirm_blocks (exclusive)
_LOCK_OWNER = 0x4C4F574E  # "LOWN": lots and settlement events of one owner, one at a time

_INT32_MAX = 2**31 - 1
_INT16_MAX = 2**15 - 1


def persist_operations(
    conn: psycopg.Connection, ops: list[Operation], *, unfreeze_delay_seconds: int, fence: Fence | None = None
) -> set[str]:
    """Upsert a group of operations in ONE transaction (with their unfreeze lots and lot
    settlements); return the accounts to invalidate. A group is one owner's operations as the
    listener sends them, or a single operation (a group split to isolate a poison one, a
    reconciliation's find): one path, so one set of locks and one place the folded positions are
    dropped. One commit (one WAL flush) and a few round trips per group instead of two or more per
    operation: the single biggest cost of ingest (docs/BENCHMARKS.md, "Ingest").

    Lock order, so that groups written side by side cannot deadlock on the owner locks: the shared
    confirm lock first, then owner locks in sorted owner order, the lots and settlements of each
    owner together. Plain rows are written first, in (tx_id, op_index) order, so two groups that
    share rows (a redelivery beside a repair's re-send) lock them in the same order. The folded
    positions are dropped after the writes, inside the transaction: the shared confirm lock it
    holds keeps a fold (confirm_blocks, exclusive) from running in between.
    """
    for op in ops:
        _check_storable(op)
    plain_stake: list[dict[str, Any]] = []
    plain_delegate: list[dict[str, Any]] = []
    lots_and_settlements: list[tuple[Operation, dict[str, Any], bool]] = []
    touched: set[str] = set()
    lowest: dict[str, int] = {}  # owner -> lowest block written, for the folded positions
    for op in sorted(ops, key=lambda o: (o.tx_id, o.op_index)):
        params = _params(op)
        is_lot = op.kind == UNFREEZE and op.contract_type == UNFREEZE_V2
        if op.kind in DELEGATE_KINDS:
            plain_delegate.append(params)
            touched.add(op.receiver_address)  # type: ignore[arg-type]  # validated for delegations
        elif is_lot or op.kind in (WITHDRAW, CANCEL):
            lots_and_settlements.append((op, params, is_lot))
        else:
            plain_stake.append(params)
        touched.add(op.owner_address)
        lowest[op.owner_address] = min(op.block_num, lowest.get(op.owner_address, op.block_num))
    if not touched:
        return touched
    with conn.transaction():
        _check_fence(conn, fence)
        _lock_confirm_shared(conn)
        if plain_stake:
            _upsert(conn, _UPSERT_STAKE, plain_stake)
        if plain_delegate:
            _upsert(conn, _UPSERT_DELEGATE, plain_delegate)
        if lots_and_settlements:
            _write_lots_and_settlements(conn, lots_and_settlements, unfreeze_delay_seconds)
        for owner in sorted(lowest):
            positions.drop_folded_at_or_after(conn, owner, lowest[owner])
    return touched


def _write_lots_and_settlements(
    conn: psycopg.Connection, items: list[tuple[Operation, dict[str, Any], bool]], unfreeze_delay_seconds: int
) -> None:
    """The lots and settlements of a group, a statement kind at a time (each `executemany` is one
    pipelined round trip): the owners' locks (sorted), every row, their stored state, the lots,
    then every settlement. Settling after all the rows and lots are written gives what settling
    after each would: a settlement is recomputed from the stored rows, whatever their order.
    The caller holds the confirm lock: the two locks are always taken in the same order (confirm,
    then owner) and cannot deadlock with revert_blocks."""
    for owner in sorted({op.owner_address for op, _, _ in items}):
        _lock_owner(conn, owner)
    _upsert(conn, _UPSERT_STAKE, [params for _, params, _ in items])
    with conn.cursor() as cur:
        stored = {
            (tx_id, op_index): rest
            for tx_id, op_index, *rest in conn.execute(
                "SELECT tx_id, op_index, status, block_num, tx_index, block_time FROM stake_records"
                " WHERE (tx_id, op_index) IN (SELECT * FROM unnest(%s::text[], %s::smallint[]))",
                ([op.tx_id for op, _, _ in items], [op.op_index for op, _, _ in items]),
            ).fetchall()
        }
        failed_lots, lots, lot_settles, event_settles = [], [], [], []
        for op, params, is_lot in items:
            status, block_num, tx_index, block_time = stored[(op.tx_id, op.op_index)]  # just upserted
            key = {"owner": op.owner_address, "tx_id": op.tx_id, "op_index": op.op_index}
            if is_lot and status == FAILED:
                # A failed transaction never created a lot; drop one left by an earlier, pending copy.
                failed_lots.append((op.tx_id, op.op_index))
            elif is_lot:
                lots.append({**params, "delay": unfreeze_delay_seconds})
                lot_settles.append(key)
            else:
                event_settles.append({**key, "block_num": block_num, "tx_index": tx_index, "block_time": block_time})
        if failed_lots:
            cur.executemany("DELETE FROM unfreeze_records WHERE tx_id = %s AND op_index = %s", failed_lots)
        if lots:
            cur.executemany(_UPSERT_LOT, lots)
            cur.executemany(_SETTLE.format(scope=_LOT_SCOPE), lot_settles)
        if event_settles:
            cur.executemany(_SETTLE.format(scope=_EVENT_SCOPE), event_settles)


def confirm_blocks(
    conn: psycopg.Connection,
    solid_block: int,
    *,
    unfreeze_delay_seconds: int = DEFAULT_UNFREEZE_DELAY,
    fence: Fence | None = None,
) -> set[str]:
    """Record the solidified head, confirm pending rows at or below it and fold the pool accounts'
    positions up to it (ledger.store.positions); return accounts touched."""
    if not isinstance(solid_block, int) or isinstance(solid_block, bool) or not 0 <= solid_block <= INT64_MAX:
        raise PayloadError(f"solid block {solid_block!r} is not a block number")
    with conn.transaction():
        _check_fence(conn, fence)
        # Exclusive: waits for in-flight persists, so none can insert a pending row this update misses.
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (_LOCK_CONFIRM,))
        row = conn.execute(
            "INSERT INTO chain_state (id, solid_block) VALUES (1, %(solid)s)"
            " ON CONFLICT (id) DO UPDATE SET solid_block = greatest(chain_state.solid_block, EXCLUDED.solid_block),"
            " updated_at = now()"
            " RETURNING solid_block",
            {"solid": solid_block},
        ).fetchone()
        assert row is not None
        rows = conn.execute(_CONFIRM, {"solid": row[0]}).fetchall()
        # Under the exclusive lock: no persist is in flight, and one that follows sees the folded
        # block and drops it if its record is at or below it.
        positions.fold(conn, row[0], unfreeze_delay_seconds * 1000)
    return {address for (address,) in rows if address}


def revert_blocks(conn: psycopg.Connection, blocks: list[list[Any]], *, fence: Fence | None = None) -> set[str]:
    """Orphan the records of blocks that left the chain (`[[block_num, block_id], ...]`), which the
    caller has shown to be off the canonical chain (workers/canonical.py): they are recorded as
    orphaned and checked. A block the listener's recent blocks hold is skipped, checked in this
    transaction: the chain as the listener last read it has it.

    Only pending and failed records can be orphaned: forks never reach below the solidified head,
    and a failed transaction leaves the chain with its block like any other. Lots of
    orphaned unfreezes are orphaned too, and the owners' other lots are settled again, since a
    withdraw or cancel that settled them may be among the orphaned records.
    """
    pairs = block_pairs(blocks)
    if not pairs:
        return set()
    with conn.transaction():
        _check_fence(conn, fence)
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (_LOCK_CONFIRM,))
        recorded = {
            block_id
            for (block_id,) in conn.execute(
                "SELECT block_id FROM recent_blocks WHERE block_id = ANY(%s)", ([bid for _, bid in pairs],)
            ).fetchall()
        }
        pairs = [(num, block_id) for num, block_id in pairs if block_id not in recorded]
        if not pairs:
            return set()
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orphaned_blocks (block_num, block_id, term, checked_at) VALUES (%s, %s, %s, now())"
                " ON CONFLICT (block_id) DO UPDATE SET checked_at = coalesce(orphaned_blocks.checked_at, now())",
                [(num, block_id, None if fence is None else fence.term) for num, block_id in pairs],
            )
        rows = conn.execute(_REVERT, {"ids": [block_id for _, block_id in pairs]}).fetchall()
        touched = {address for (address,) in rows if address}
        _settle_again(conn, touched, min(num for num, _ in pairs))
    return touched


def restore_blocks(conn: psycopg.Connection, blocks: list[tuple[int, str]]) -> tuple[int, set[str]]:
    """Undo the orphaning of blocks shown to be on the canonical chain (workers/canonical.py): they
    leave `orphaned_blocks`, and their orphaned records take the status their block gives them
    (failed if the transaction failed, else confirmed at or below the solidified head, else
    pending), their lots with them. Returns how many records were restored, and the accounts
    touched."""
    if not blocks:
        return 0, set()
    ids = [block_id for _, block_id in blocks]
    with conn.transaction():
        # Exclusive, as for a revert: no persist or confirmation runs in between.
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (_LOCK_CONFIRM,))
        conn.execute("DELETE FROM orphaned_blocks WHERE block_id = ANY(%s)", (ids,))
        rows = conn.execute(_RESTORE, {"ids": ids}).fetchall()
        touched = {address for _, address in rows if address}
        _settle_again(conn, touched, min(num for num, _ in blocks))
    return len({key for key, _ in rows if key is not None}), touched


def _settle_again(conn: psycopg.Connection, owners: set[str], lowest: int) -> None:
    """After records of blocks from `lowest` on changed status (a revert or a restore): settle the
    owners' lots again, since a withdraw or cancel that settles them may be among those records,
    and drop the folded positions from that block on, which a fold may have taken them into (a
    solidified head reported past the fork before the message ran); they are rebuilt."""
    for owner in sorted(owners):
        _lock_owner(conn, owner)
        conn.execute(_SETTLE.format(scope="true"), {"owner": owner})
        positions.drop_folded_at_or_after(conn, owner, lowest)


def block_pairs(blocks: Any) -> list[tuple[int, str]]:
    if not isinstance(blocks, list):
        raise PayloadError(f"blocks {blocks!r} is not a list of [block_num, block_id]")
    pairs = []
    for item in blocks:
        ok = isinstance(item, list | tuple) and len(item) == 2
        if not ok or not isinstance(item[0], int) or not isinstance(item[1], str) or not item[1]:
            raise PayloadError(f"block {item!r} is not [block_num, block_id]")
        pairs.append((item[0], item[1]))
    return pairs


# --- helpers --------------------------------------------------------------------------------------


def _check_fence(conn: psycopg.Connection, fence: Fence | None) -> None:
    # First in the transaction, before the confirm lock: a takeover waits for this transaction
    # (it takes the fence lock exclusively), and a stale message is refused before it writes.
    if fence is not None:
        check_fence(conn, fence)


def _lock_confirm_shared(conn: psycopg.Connection) -> None:
    # Shared with other persists, exclusive with confirm_blocks. Without it a persist could read
    # the old solid block and insert 'pending' while a concurrent confirm_blocks, not seeing that
    # uncommitted row, confirms everything else: the row would stay pending until the next one.
    # A statement of its own, before the writes: a statement's snapshot is taken when it starts,
    # so an upsert that waited for the lock inside itself still read the solid block from before
    # the confirmation it waited for (tests/test_persist.py, a persist that waited ...).
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s::int, 0)", (_LOCK_CONFIRM,))


def _lock_owner(conn: psycopg.Connection, owner: str) -> None:
    # A lot and the withdraw that settles it may be written by two workers at once; under READ
    # COMMITTED neither would see the other's row and the lot would stay open (write skew).
    # Serialising one owner's lots and events makes the later transaction see the earlier one.
    # Taken after the confirm lock, always in that order, so the two cannot deadlock.
    conn.execute("SELECT pg_advisory_xact_lock(%s::int, hashtext(%s))", (_LOCK_OWNER, owner))


def _check_storable(op: Operation) -> None:
    """Reject, as poison, a valid-looking operation the schema can never hold."""
    problems = []
    for name, top in (
        ("block_num", INT64_MAX),
        ("block_time_ms", INT64_MAX // 1000),
        ("amount", INT64_MAX),
        ("lock_period", INT64_MAX // BLOCK_INTERVAL_MS),
        ("tx_index", _INT32_MAX),
        ("op_index", _INT16_MAX),
    ):
        if getattr(op, name) > top:
            problems.append(f"{name} {getattr(op, name)} is out of range")
    needs_resource = op.kind in DELEGATE_KINDS or (op.kind == UNFREEZE and op.contract_type == UNFREEZE_V2)
    if needs_resource and op.resource is None:
        problems.append(f"{op.kind} needs a resource")
    if problems:
        raise PayloadError(f"operation {op.tx_id}/{op.op_index}: " + "; ".join(problems))


def _upsert(conn: psycopg.Connection, statement: str, rows: list[dict[str, Any]]) -> None:
    """Upsert `rows` (see `_ROW`) in one statement. A statement cannot touch a row twice (ON
    CONFLICT), so copies of one key (a record sent pending and again confirmed, a redelivery in the
    same group) go in statements of their own, in order: each key's copies apply one after another
    as they would row by row, where the upsert's rules keep the furthest status."""
    rounds: list[dict[tuple[str, int], dict[str, Any]]] = []
    for row in rows:
        key = (row["tx_id"], row["op_index"])
        for batch in rounds:
            if key not in batch:
                batch[key] = row
                break
        else:
            rounds.append({key: row})
    for batch in rounds:
        conn.execute(statement, {"rows": orjson.dumps(list(batch.values())).decode()})


def _params(op: Operation) -> dict[str, Any]:
    values = op.to_message()
    values["lock_expire_ms"] = op.lock_expire_time_ms
    return values


# Times are built from integer milliseconds with interval arithmetic, which is exact (a float
# division would be too, at today's magnitudes, but this needs no argument).
_MS = "(timestamptz 'epoch' + {name}::bigint * interval '1 millisecond')"

# java-tron's "now" for a record's transaction: its parent block's time (Manager.processBlock), or
# the block's own time where that is not known. A lot matures at now + delay; a withdraw takes the
# lots matured at its own now.
_NOW = "coalesce(timestamptz 'epoch' + {t}.parent_time_ms * interval '1 millisecond', {t}.block_time)"

# A pending message for a block already solidified is stored confirmed, so a confirmation that
# raced ahead of the insert is not lost. A record from a block that left the chain (a fork) is
# stored orphaned, whenever it arrives.
_NEW_STATUS = (
    "CASE WHEN EXISTS (SELECT 1 FROM orphaned_blocks o WHERE o.block_id = p.block_id) THEN 'orphaned'"
    " WHEN p.status = 'pending'"
    " AND p.block_num <= (SELECT solid_block FROM chain_state WHERE id = 1)"
    " THEN 'confirmed' ELSE p.status END"
)

# A group's rows of one table are ONE statement over one JSON document (`%(rows)s`, a list of
# `_params`), the way the checkpoint records its expected operations: one round trip, one plan and
# one run of the statement's event trigger (sql/027) for the group, instead of one of each per row.
# Rows are inserted (and so locked) in (tx_id, op_index) order, bytewise as Python sorts them.
_ROW = (
    "tx_id text, op_index smallint, block_num bigint, block_id text, tx_index integer, block_time_ms bigint,"
    " owner_address text, kind text, contract_type text, resource text, amount bigint, status text,"
    " contract_ret text, parent_time_ms bigint"
)
_DELEGATE_ROW = _ROW + ", receiver_address text, lock boolean, lock_period bigint, lock_expire_ms bigint"
_ORDER = 'ORDER BY p.tx_id COLLATE "C", p.op_index'

# ON CONFLICT ... WHERE: only a pending row takes the new data and status (which may itself be
# pending, confirmed or failed); a confirmed or failed row is final and a replay changes nothing.
# After a fork an orphaned row takes the data of the block the transaction reappeared in, and a
# late message from an orphaned block never overwrites the row of the canonical one.
# "Failed" is final only on its own block: a failed transaction in a block that left the chain is
# orphaned like any other (the chain no longer holds it), and if it reappears in a later block its
# row moves there, even when that message is handled before the revert (the listener records the
# orphaned block before it enqueues anything of the new branch, so the EXISTS below sees it).
# A transaction re-packed after a fork and orphaned again keeps the last block it was in (re-packed
# copies only ever go to later blocks), whatever order its copies arrive in.
_UPDATABLE = """(
    (EXCLUDED.status <> 'orphaned'
     AND (r.status IN ('pending', 'orphaned')
          OR (r.status = 'failed' AND EXISTS (SELECT 1 FROM orphaned_blocks o WHERE o.block_id = r.block_id))))
    OR (r.status = 'pending' AND r.block_id = EXCLUDED.block_id)
    OR (r.status = 'failed' AND r.block_id = EXCLUDED.block_id AND EXCLUDED.status = 'orphaned')
    OR (r.status = 'orphaned' AND EXCLUDED.status = 'orphaned' AND EXCLUDED.block_num > r.block_num))"""
_UPSERT_STAKE = f"""
INSERT INTO stake_records AS r (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,
                                operation_type, contract_type, resource, amount, status, contract_ret,
                                parent_time_ms)
SELECT p.tx_id, p.op_index, p.block_num, p.block_id, p.tx_index, {_MS.format(name="p.block_time_ms")},
       p.owner_address, p.kind, p.contract_type, p.resource, p.amount, {_NEW_STATUS}, p.contract_ret,
       p.parent_time_ms
FROM jsonb_to_recordset(%(rows)s::jsonb) AS p({_ROW})
{_ORDER}
ON CONFLICT (tx_id, op_index) DO UPDATE SET
    block_num = EXCLUDED.block_num, block_id = EXCLUDED.block_id, tx_index = EXCLUDED.tx_index,
    block_time = EXCLUDED.block_time, owner_address = EXCLUDED.owner_address,
    operation_type = EXCLUDED.operation_type, contract_type = EXCLUDED.contract_type,
    resource = EXCLUDED.resource, amount = EXCLUDED.amount, status = EXCLUDED.status,
    contract_ret = EXCLUDED.contract_ret, parent_time_ms = EXCLUDED.parent_time_ms, updated_at = now()
WHERE {_UPDATABLE}
"""

_UPSERT_DELEGATE = f"""
INSERT INTO delegate_records AS r (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,
                                   receiver_address, operation_type, contract_type, resource, amount, lock,
                                   lock_period, lock_expire_time, status, contract_ret, parent_time_ms)
SELECT p.tx_id, p.op_index, p.block_num, p.block_id, p.tx_index, {_MS.format(name="p.block_time_ms")},
       p.owner_address, p.receiver_address, p.kind, p.contract_type, p.resource, p.amount, p.lock,
       p.lock_period, {_MS.format(name="p.lock_expire_ms")}, {_NEW_STATUS}, p.contract_ret, p.parent_time_ms
FROM jsonb_to_recordset(%(rows)s::jsonb) AS p({_DELEGATE_ROW})
{_ORDER}
ON CONFLICT (tx_id, op_index) DO UPDATE SET
    block_num = EXCLUDED.block_num, block_id = EXCLUDED.block_id, tx_index = EXCLUDED.tx_index,
    block_time = EXCLUDED.block_time, owner_address = EXCLUDED.owner_address,
    receiver_address = EXCLUDED.receiver_address, operation_type = EXCLUDED.operation_type,
    contract_type = EXCLUDED.contract_type, resource = EXCLUDED.resource, amount = EXCLUDED.amount,
    lock = EXCLUDED.lock, lock_period = EXCLUDED.lock_period, lock_expire_time = EXCLUDED.lock_expire_time,
    status = EXCLUDED.status, contract_ret = EXCLUDED.contract_ret, parent_time_ms = EXCLUDED.parent_time_ms,
    updated_at = now()
WHERE {_UPDATABLE}
"""

# The lot mirrors its stake row as stored (which a replay may not have changed). Its status is
# left to the settlement below; `confirmed` only ever turns on.
_UPSERT_LOT = f"""
INSERT INTO unfreeze_records AS u (tx_id, op_index, block_num, tx_index, block_time, owner_address, resource,
                                   amount, available_time, status, confirmed)
SELECT s.tx_id, s.op_index, s.block_num, s.tx_index, s.block_time, s.owner_address, s.resource,
       s.amount, {_NOW.format(t="s")} + %(delay)s::bigint * interval '1 second',
       CASE WHEN s.status = 'orphaned' THEN 'orphaned' ELSE 'pending' END, s.status = 'confirmed'
FROM stake_records s
WHERE s.tx_id = %(tx_id)s AND s.op_index = %(op_index)s
ON CONFLICT (tx_id, op_index) DO UPDATE SET
    block_num = EXCLUDED.block_num, tx_index = EXCLUDED.tx_index, block_time = EXCLUDED.block_time,
    owner_address = EXCLUDED.owner_address, resource = EXCLUDED.resource, amount = EXCLUDED.amount,
    available_time = EXCLUDED.available_time, confirmed = u.confirmed OR EXCLUDED.confirmed,
    -- an orphaned lot whose unfreeze reappeared on the canonical chain opens again (then settles)
    status = CASE WHEN EXCLUDED.status = 'orphaned' THEN 'orphaned'
                  WHEN u.status = 'orphaned' THEN 'pending' ELSE u.status END,
    updated_at = now()
"""

# The lots a write settles again: a new lot itself; for a withdraw or cancel (an "event"), the lots
# before it whose outcome it can change: still open, settled by a later (or same-time) event, or
# settled by itself (if it now failed).
_LOT_SCOPE = "u.tx_id = %(tx_id)s AND u.op_index = %(op_index)s"
_EVENT_SCOPE = (
    "(u.block_num, u.tx_index) <= (%(block_num)s, %(tx_index)s)"
    " AND (u.status IN ('pending', 'withdrawable') OR u.settled_time >= %(block_time)s"
    " OR u.settled_tx_id = %(tx_id)s)"
)

# Settle (or re-open) the owner's lots in `scope` from scratch: a lot is closed by the first later
# non-failed withdraw of the owner at or after its available_time (withdrawn), or cancel-all
# (withdrawn if it had matured, else cancelled). Computed from stored rows only, so the result
# does not depend on the order the messages arrived in.
_SETTLE = f"""
WITH decided AS (
    SELECT u.id,
           e.tx_id AS settled_tx_id,
           e.block_time AS settled_time,
           CASE WHEN e.tx_id IS NULL THEN 'pending'
                WHEN e.now >= u.available_time THEN 'withdrawn'
                ELSE 'cancelled' END AS status
    FROM unfreeze_records u
    LEFT JOIN LATERAL (
        SELECT s.tx_id, s.block_time, {_NOW.format(t="s")} AS now
        FROM stake_records s
        WHERE s.owner_address = u.owner_address
          AND s.operation_type IN ('withdraw_expire_unfreeze', 'cancel_all_unfreeze')
          AND s.status IN ('pending', 'confirmed')
          AND (s.block_num, s.tx_index) > (u.block_num, u.tx_index)
          AND (s.operation_type = 'cancel_all_unfreeze' OR {_NOW.format(t="s")} >= u.available_time)
        ORDER BY s.block_num, s.tx_index, s.op_index
        LIMIT 1
    ) e ON true
    WHERE u.owner_address = %(owner)s AND u.status <> 'orphaned' AND {{scope}}
)
UPDATE unfreeze_records u
SET status = d.status, settled_tx_id = d.settled_tx_id, settled_time = d.settled_time, updated_at = now()
FROM decided d
WHERE u.id = d.id
  AND (u.status, u.settled_tx_id, u.settled_time) IS DISTINCT FROM (d.status, d.settled_tx_id, d.settled_time)
"""

# Data-modifying CTEs all run to completion; the lots follow the stake rows confirmed here (a lot
# whose stake row was confirmed earlier got `confirmed` when it was written).
_CONFIRM = """
WITH s AS (
    UPDATE stake_records SET status = 'confirmed', updated_at = now()
    WHERE status = 'pending' AND block_num <= %(solid)s
      AND block_id NOT IN (SELECT block_id FROM orphaned_blocks)
    RETURNING tx_id, op_index, owner_address
), lots AS (
    UPDATE unfreeze_records u SET confirmed = true, updated_at = now()
    FROM s
    WHERE u.tx_id = s.tx_id AND u.op_index = s.op_index AND NOT u.confirmed
    RETURNING u.owner_address
), d AS (
    UPDATE delegate_records SET status = 'confirmed', updated_at = now()
    WHERE status = 'pending' AND block_num <= %(solid)s
      AND block_id NOT IN (SELECT block_id FROM orphaned_blocks)
    RETURNING owner_address, receiver_address
)
SELECT owner_address FROM s
UNION SELECT owner_address FROM lots
UNION SELECT owner_address FROM d
UNION SELECT receiver_address FROM d
"""

# The status a restored record takes: what its block gives it, as a fresh persist would.
_RESTORED_STATUS = (
    "CASE WHEN {t}.contract_ret IS NOT NULL AND {t}.contract_ret <> 'SUCCESS' THEN 'failed'"
    " WHEN {t}.block_num <= (SELECT solid_block FROM chain_state WHERE id = 1) THEN 'confirmed'"
    " ELSE 'pending' END"
)

# (record key or NULL, account touched) rows; the lots follow their stake rows.
_RESTORE = f"""
WITH s AS (
    UPDATE stake_records r SET status = {_RESTORED_STATUS.format(t="r")}, updated_at = now()
    WHERE r.status = 'orphaned' AND r.block_id = ANY(%(ids)s)
    RETURNING r.tx_id, r.op_index, r.owner_address, r.status
), lots AS (
    UPDATE unfreeze_records u SET status = 'pending', confirmed = u.confirmed OR s.status = 'confirmed',
        updated_at = now()
    FROM s
    WHERE u.tx_id = s.tx_id AND u.op_index = s.op_index AND u.status = 'orphaned'
    RETURNING u.owner_address
), d AS (
    UPDATE delegate_records r SET status = {_RESTORED_STATUS.format(t="r")}, updated_at = now()
    WHERE r.status = 'orphaned' AND r.block_id = ANY(%(ids)s)
    RETURNING r.tx_id, r.op_index, r.owner_address, r.receiver_address
)
SELECT 's:' || tx_id || ':' || op_index, owner_address FROM s
UNION ALL SELECT 'd:' || tx_id || ':' || op_index, owner_address FROM d
UNION ALL SELECT NULL, receiver_address FROM d
UNION ALL SELECT NULL, owner_address FROM lots
"""

_REVERT = """
WITH s AS (
    UPDATE stake_records SET status = 'orphaned', updated_at = now()
    WHERE status IN ('pending', 'failed') AND block_id = ANY(%(ids)s)
    RETURNING tx_id, op_index, owner_address
), lots AS (
    UPDATE unfreeze_records u SET status = 'orphaned', updated_at = now()
    FROM s
    WHERE u.tx_id = s.tx_id AND u.op_index = s.op_index
    RETURNING u.owner_address
), d AS (
    UPDATE delegate_records SET status = 'orphaned', updated_at = now()
    WHERE status IN ('pending', 'failed') AND block_id = ANY(%(ids)s)
    RETURNING owner_address, receiver_address
)
SELECT owner_address FROM s
UNION SELECT owner_address FROM lots
UNION SELECT owner_address FROM d
UNION SELECT receiver_address FROM d
"""
