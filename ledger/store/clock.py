"""The events of chain time passing: `delegation.lock_ended` and `unstake.withdrawable`.

Nothing is written on chain when a lock ends or an unstaked lot matures; the chain's time passes
it. Each relay pass (workers/relay.py) moves this clock from the last block it looked
at to the persisted watermark (ledger/store/accounting.py: every operation of every block up to it
is stored, so no record that could extend a lock or cancel a lot is still on its way) and writes
an event, once (`once_key`), for each lock that ended and each lot that matured in between, with
the block where it happened:

- a lock has ended at the first block whose timestamp is past its expire time: java-tron merges a
  lock into the unlocked record when `expire < now` (DelegatedResourceStore.unLockExpireResource),
  and a block's transactions see its parent's timestamp as `now`, so from the next block on it can
  be undelegated (ledger/positions.py). A new locked delegation to the same receiver before that
  adds to the lock and replaces its expire time (DelegateResourceActuator), so the lock ends once,
  at the last expire time, with the whole amount: the lock is replayed by the rules' own `Pair`;
- a lot has matured at the first block whose timestamp reaches its expire time: a withdraw in the
  next block takes lots with `expire <= now` (WithdrawExpireUnfreezeActuator). A lot cancelled
  before (CancelAllUnfreezeV2) never matures.

The clock starts where the watermark is when it first runs: it does not replay the past.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from ledger.domain import BLOCK_INTERVAL_MS
from ledger.positions import Pair
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.events import LOCK_ENDED, WITHDRAWABLE, record_event

BLOCK_TIMES_KEPT = 2 * 28_800  # blocks: two days of 3-s slots
_MS = "(timestamptz 'epoch' + %s::bigint * interval '1 millisecond')"


def record_block_times(conn: psycopg.Connection, times: Sequence[tuple[int, int]]) -> None:
    """Remember (block, timestamp ms) of processed blocks (a fork's new branch overwrites the old)."""
    if not times:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO block_times (block_num, time_ms) VALUES (%s, %s)"
            " ON CONFLICT (block_num) DO UPDATE SET time_ms = EXCLUDED.time_ms",
            list(times),
        )
    conn.execute("DELETE FROM block_times WHERE block_num < %s", (max(b for b, _ in times) - BLOCK_TIMES_KEPT,))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def advance(conn: psycopg.Connection) -> dict[str, int]:
    """Move the clock to the persisted watermark, writing the events passed on the way; counts."""
    counts = {"lock_ended": 0, "withdrawable": 0}
    with conn.transaction():
        row = conn.execute(
            "SELECT c.persisted_block, t.time_ms FROM listener_checkpoint c"
            " JOIN block_times t ON t.block_num = c.persisted_block WHERE c.name = %s",
            (MAIN_CHECKPOINT,),
        ).fetchone()
        if row is None:
            return counts
        upto, upto_ms = int(row[0]), int(row[1])
        state = conn.execute("SELECT block_num, time_ms FROM event_clock WHERE id = 1 FOR UPDATE").fetchone()
        if state is None:
            conn.execute("INSERT INTO event_clock (block_num, time_ms) VALUES (%s, %s)", (upto, upto_ms))
            return counts
        since, since_ms = int(state[0]), int(state[1])
        if upto <= since or upto_ms < since_ms:
            return counts
        counts["lock_ended"] = _lock_ends(conn, since_ms, upto, upto_ms)
        counts["withdrawable"] = _matured_lots(conn, since_ms, upto, upto_ms)
        conn.execute(
            "UPDATE event_clock SET block_num = %s, time_ms = %s, updated_at = now() WHERE id = 1", (upto, upto_ms)
        )
    return counts


def _first_block(conn: psycopg.Connection, after_ms: int, upto: int, *, inclusive: bool) -> tuple[int, int]:
    """The first block up to `upto` whose time is past `after_ms` (or reaches it, `inclusive`)."""
    op = ">=" if inclusive else ">"
    row = conn.execute(
        f"SELECT block_num, time_ms FROM block_times WHERE time_ms {op} %s AND block_num <= %s"
        " ORDER BY block_num LIMIT 1",
        (after_ms, upto),
    ).fetchone()
    if row is None:  # the block's time is no longer kept: the clock's own block stands in
        row = conn.execute("SELECT block_num, time_ms FROM block_times WHERE block_num = %s", (upto,)).fetchone()
    assert row is not None  # advance() found the watermark's time
    return int(row[0]), int(row[1])


def _lock_ends(conn: psycopg.Connection, since_ms: int, upto: int, upto_ms: int) -> int:
    """Locks of pool accounts whose last expire time is in [since_ms, upto_ms): ended in the window."""
    pairs = conn.execute(
        "SELECT DISTINCT d.owner_address, d.receiver_address, d.resource FROM delegate_records d"
        " JOIN pool_accounts a ON a.address = d.owner_address"
        f" WHERE d.lock AND d.lock_expire_time >= {_MS} AND d.lock_expire_time < {_MS}"
        " AND d.operation_type = 'delegate' AND d.status IN ('pending', 'confirmed') AND d.block_num <= %s"
        " UNION SELECT o.address, p->>0, p->>1 FROM position_openings o"
        " JOIN pool_accounts a ON a.address = o.address, json_array_elements(o.state->'p') p"
        " WHERE (p->>3)::bigint > 0 AND (p->>4)::bigint >= %s AND (p->>4)::bigint < %s",
        (since_ms, upto_ms, upto, since_ms, upto_ms),
    ).fetchall()
    written = 0
    for owner, receiver, resource in pairs:
        for expire_ms, amount in _ended_locks(conn, owner, receiver, resource, upto, upto_ms):
            if not since_ms <= expire_ms < upto_ms:
                continue
            block, block_ms = _first_block(conn, expire_ms, upto, inclusive=False)
            written += record_event(
                conn,
                LOCK_ENDED,
                owner,
                {
                    "owner_address": owner,
                    "receiver_address": receiver,
                    "resource": resource,
                    "amount": amount,
                    "lock_end": _iso(expire_ms),
                },
                block_num=block,
                block_time=_time(block_ms),
                once_key=f"lock_ended:{owner}:{receiver}:{resource}:{expire_ms}",
            )
    return written


def _ended_locks(
    conn: psycopg.Connection, owner: str, receiver: str, resource: str, upto: int, upto_ms: int
) -> list[tuple[int, int]]:
    """(expire ms, amount) of each lock of the pair that ended by block `upto` (time `upto_ms`),
    replayed from the opening state and the locked delegations after it."""
    pair, after = Pair(), -1
    opening = conn.execute(
        "SELECT block_num, state::text FROM position_openings WHERE address = %s", (owner,)
    ).fetchone()
    if opening is not None:
        after = int(opening[0])
        for r, res, _, locked, expire in orjson.loads(opening[1])["p"]:
            if (r, res) == (receiver, resource) and locked:
                pair.locked, pair.expire_ms = int(locked), int(expire)
    rows = conn.execute(
        "SELECT coalesce(parent_time_ms, (extract(epoch FROM block_time) * 1000)::bigint), amount, lock_period"
        " FROM delegate_records WHERE owner_address = %s AND receiver_address = %s AND resource = %s AND lock"
        " AND operation_type = 'delegate' AND status IN ('pending', 'confirmed') AND block_num > %s"
        " AND block_num <= %s ORDER BY block_num, tx_index, op_index",
        (owner, receiver, resource, after, upto),
    ).fetchall()
    ended: list[tuple[int, int]] = []
    for now_ms, amount, lock_period in rows:
        if pair.locked and pair.expire_ms < now_ms:
            ended.append((pair.expire_ms, pair.locked))
        pair.merge_expired(int(now_ms))
        pair.locked += int(amount)
        pair.expire_ms = int(now_ms) + int(lock_period) * BLOCK_INTERVAL_MS
    if pair.locked and pair.expire_ms < upto_ms:
        ended.append((pair.expire_ms, pair.locked))
    return ended


def _matured_lots(conn: psycopg.Connection, since_ms: int, upto: int, upto_ms: int) -> int:
    """Lots of pool accounts whose expire time is in (since_ms, upto_ms] and that were not cancelled."""
    lots: list[tuple[Any, ...]] = [
        (f"withdrawable:{tx_id}:{op_index}", owner, resource, int(amount), int(expire_ms), tx_id, op_index)
        for tx_id, op_index, owner, resource, amount, expire_ms in conn.execute(
            "SELECT u.tx_id, u.op_index, u.owner_address, u.resource, u.amount,"
            " (extract(epoch FROM u.available_time) * 1000)::bigint FROM unfreeze_records u"
            " JOIN pool_accounts a ON a.address = u.owner_address"
            f" WHERE u.available_time > {_MS} AND u.available_time <= {_MS}"
            " AND u.status IN ('pending', 'withdrawable', 'withdrawn') AND u.block_num <= %s",
            (since_ms, upto_ms, upto),
        ).fetchall()
    ]
    # Lots of the opening state (unstaked before the ledger's first block), unless a cancel-all
    # after the opening took them back before they matured.
    for address, opened, state in conn.execute(
        "SELECT o.address, o.block_num, o.state::text FROM position_openings o JOIN pool_accounts a"
        " ON a.address = o.address"
    ).fetchall():
        for i, (resource, amount, expire_ms) in enumerate(orjson.loads(state)["l"]):
            if not since_ms < expire_ms <= upto_ms:
                continue
            cancelled = conn.execute(
                "SELECT 1 FROM stake_records WHERE owner_address = %s AND operation_type = 'cancel_all_unfreeze'"
                " AND status IN ('pending', 'confirmed') AND block_num > %s AND block_num <= %s"
                " AND coalesce(parent_time_ms, (extract(epoch FROM block_time) * 1000)::bigint) < %s LIMIT 1",
                (address, opened, upto, expire_ms),
            ).fetchone()
            if cancelled is None:
                lots.append(
                    (f"withdrawable:opening:{address}:{resource}:{expire_ms}:{i}", address, resource, amount,
                     expire_ms, None, None)
                )  # fmt: skip
    written = 0
    for key, owner, resource, amount, expire_ms, tx_id, op_index in lots:
        block, block_ms = _first_block(conn, expire_ms, upto, inclusive=True)
        written += record_event(
            conn,
            WITHDRAWABLE,
            owner,
            {
                "owner_address": owner,
                "resource": resource,
                "amount": amount,
                "expire_time": _iso(expire_ms),
                "tx_id": tx_id,
                "op_index": op_index,
            },
            block_num=block,
            block_time=_time(block_ms),
            once_key=key,
        )
    return written
