"""Positions in PostgreSQL (sql/007_positions.sql): the opening state, the folded state and the
records replayed on top of them by the rules of ledger/positions.py.

`position_openings` holds the opening state of an account at a block; `positions` holds the state
folded through a block at or below the solidified head (forks never reach there); a read replays
the few records above it (the pending tail), so it costs O(receivers + tail), not O(history), and
a fork only ever changes the tail. A record that arrives late, at or below the folded block, drops
the folded state, which the next fold rebuilds from the opening: out-of-order delivery costs time,
never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import psycopg

from ledger.chain.resources import NetworkTotals
from ledger.domain import INT64_MAX, RESOURCES
from ledger.positions import Lot, Pair, Position, Row, replay
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.network_totals import StoredTotals

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
    one shared UPDATE, so a confirmation every block stays cheap with many pool accounts. With the
    state it writes what the summary renders from it (`_store_figures`)."""
    conn.execute(_ADVANCE_IDLE, {"solid": solid_block})
    accounts = [a for (a,) in conn.execute(_TO_FOLD, {"solid": solid_block}).fetchall()]
    for address in accounts:
        row = conn.execute(
            "SELECT 0 AS k, state::text, block_num, figures IS NOT NULL FROM positions WHERE address = %(a)s"
            " UNION ALL SELECT 1, state::text, block_num, false FROM position_openings WHERE address = %(a)s"
            " ORDER BY k LIMIT 1",
            {"a": address},
        ).fetchone()
        pos = _start(row[1], row[2]) if row else Position()
        if pos.block_num >= solid_block:
            continue
        # The receiver rows hold the folded state's pairs when its figures were written with it.
        stored = {key: (p.unlocked, p.locked, p.expire_ms) for key, p in pos.pairs.items()} if row and row[3] else None
        replay(pos, load_rows(conn, address, pos.block_num, solid_block), unfreeze_delay_ms)
        pos.block_num = solid_block
        conn.execute(
            "INSERT INTO positions (address, block_num, state, figures) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (address) DO UPDATE SET block_num = EXCLUDED.block_num, state = EXCLUDED.state,"
            " figures = EXCLUDED.figures, updated_at = now()",
            (address, solid_block, pos.to_json().decode(), figures_json(pos).decode()),
        )
        _store_receivers(conn, address, stored, pos)
    return accounts


# -- what the summary renders, stored with the folded state -----------------------------------------


def figures_json(pos: Position) -> bytes:
    """`positions.figures`: the state without its pairs (they are rows of `position_receivers`) and,
    per resource, the delegated total and the number of receiver records over all of them. Both are
    independent of chain time but for the locked amount at the state's own time; what depends on
    chain time (locked or not, withdrawable or not) is decided by the read from the rows' lock ends
    and the lots."""
    # [delegated total, receiver records, locked in locks not ended at the state's own time]: that
    # time is at or before any chain time a read is made at, so a read takes off only the locks
    # that ended since (a range of the lock-end index), not a sum over every lock.
    totals = {res: [0, 0, 0] for res in RESOURCES}
    for (_, res), pair in pos.pairs.items():
        totals[res][0] += pair.unlocked + pair.locked
        totals[res][1] += 1
        if pair.locked and pair.expire_ms >= pos.time_ms:
            totals[res][2] += pair.locked
    return orjson.dumps(
        {
            "t": pos.time_ms,
            "s": pos.staked,
            "v1": pos.staked_v1,
            "l": [[lot.resource, lot.amount, lot.expire_ms] for lot in pos.lots],
            "d": pos.shortfall,
            "r": totals,
        }
    )


def _store_receivers(
    conn: psycopg.Connection, address: str, stored: dict[tuple[str, str], tuple[int, int, int]] | None, pos: Position
) -> None:
    """Make the account's `position_receivers` rows the pairs of `pos`: the changed ones when the
    rows hold the earlier folded state (`stored`), else all of them."""
    now = {key: (p.unlocked, p.locked, p.expire_ms) for key, p in pos.pairs.items()}
    if stored is None:
        conn.execute("DELETE FROM position_receivers WHERE address = %s", (address,))
        with conn.cursor().copy(
            "COPY position_receivers (address, receiver, resource, unlocked, locked, expire_ms) FROM STDIN"
        ) as copy:
            for (receiver, res), values in now.items():
                copy.write_row((address, receiver, res, *values))
        return
    gone = [(address, r, res) for (r, res) in stored if (r, res) not in now]
    changed = [(address, r, res, *v) for (r, res), v in now.items() if stored.get((r, res)) != v]
    with conn.cursor() as cur:
        if gone:
            cur.executemany(
                "DELETE FROM position_receivers WHERE address = %s AND receiver = %s AND resource = %s", gone
            )
        if changed:
            cur.executemany(
                "INSERT INTO position_receivers (address, receiver, resource, unlocked, locked, expire_ms)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (address, receiver, resource) DO UPDATE SET"
                " unlocked = EXCLUDED.unlocked, locked = EXCLUDED.locked, expire_ms = EXCLUDED.expire_ms",
                changed,
            )


def drop_folded_at_or_after(conn: psycopg.Connection, address: str, block_num: int) -> None:
    """A record for a block already folded arrived late: the folded state lacks it, so drop it."""
    conn.execute("DELETE FROM positions WHERE address = %s AND block_num >= %s", (address, block_num))


def opening_of(conn: psycopg.Connection, address: str) -> tuple[str, int] | None:
    """Where the account's positions start: (source, block), `chain` for a snapshot at that block,
    `history` for a backfill of its whole history; None when it has no opening."""
    row = conn.execute("SELECT source, block_num FROM position_openings WHERE address = %s", (address,)).fetchone()
    return (str(row[0]), int(row[1])) if row else None


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


@dataclass(frozen=True)
class AtCheckpoint:
    """An account's position after every live record, with the listener's checkpoint, read together."""

    position: Position
    checkpoint_block: int | None
    checkpoint_time_ms: int | None


def read_at_checkpoint(
    conn: psycopg.Connection, address: str, unfreeze_delay_ms: int, checkpoint: str = MAIN_CHECKPOINT
) -> AtCheckpoint:
    """The account's position and the checkpoint in one snapshot: O(receivers + lots + pending tail)."""
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
    replay(pos, rows, unfreeze_delay_ms)
    return AtCheckpoint(pos, mark_block, None if mark_time is None else int(mark_time))


# -- the summary from the stored figures ----------------------------------------------------------------

ReceiverKey = tuple[str, str]  # (receiver, resource): the receivers' order, and a page's cursor


@dataclass(frozen=True)
class StoredRead:
    """What a summary renders, read from the stored figures and the pending tail in one snapshot.

    `position` is the folded state without its receivers, the tail replayed on it together with the
    pairs of the receivers the tail names (`touched`: their stored values before the tail). `totals`
    per resource are [delegated total, receiver records, locked at the folded state's time
    `position_time_ms`] over all stored pairs; `ended` per resource is what of that locked amount
    ended before `now_ms` (all stored pairs); `next_end` the first lock end at or after `now_ms` of
    the stored pairs not touched; `page` the stored pairs not touched after the cursor, in order, up
    to limit + 1. Read with them: the network's latest totals, the open drift (what, difference)
    and the opening (source, block)."""

    position: Position
    touched: dict[ReceiverKey, Pair]
    totals: dict[str, list[int]]
    ended: dict[str, int]
    next_end: int | None
    page: list[tuple[ReceiverKey, Pair]]
    after: ReceiverKey | None
    limit: int
    now_ms: int
    checkpoint_block: int | None
    network: StoredTotals | None
    drift: dict[str, int]
    opening: tuple[str, int] | None


def _pairs(text: str | None) -> list[tuple[ReceiverKey, Pair]]:
    if text is None:
        return []
    rows = orjson.loads(text)
    return [((receiver, res), Pair(unlocked, locked, expire)) for receiver, res, unlocked, locked, expire in rows]


def read_stored(
    conn: psycopg.Connection,
    address: str,
    unfreeze_delay_ms: int,
    after: ReceiverKey | None,
    limit: int,
    checkpoint: str = MAIN_CHECKPOINT,
) -> StoredRead | None:
    """The summary's parts from the figures stored with the folded state: O(page + tail + locks not
    ended), not O(receivers), in one statement (`summary_read`, sql/028_summary_read.sql). None when
    the account has no folded state with figures (the caller renders the whole state,
    `read_at_checkpoint`)."""
    start = after or ("", "")
    found = conn.execute(
        "SELECT r_base_block, r_figures, r_mark_block, r_now_ms, r_tail::text, r_touched::text, r_ended::text,"
        " r_next_end, r_page::text, r_totals_block, r_totals_read_at, r_total_energy_limit, r_total_energy_weight,"
        " r_total_net_limit, r_total_net_weight, r_drift::text, r_opening_source, r_opening_block"
        " FROM summary_read(%s, %s, %s, %s, %s)",
        (address, checkpoint, start[0], start[1], limit + 1),
    ).fetchone()
    assert found is not None  # a function with OUT parameters: always one row
    (
        base_block,
        text,
        mark_block,
        now_ms,
        tail,
        touched_text,
        ended_text,
        next_end,
        page_text,
        totals_block,
        read_at,
        energy_limit,
        energy_weight,
        net_limit,
        net_weight,
        drift,
        source,
        opening_block,
    ) = found
    if base_block is None:
        return None
    obj = orjson.loads(text)
    pos = Position(
        block_num=base_block,
        time_ms=obj["t"],
        staked=obj["s"],
        staked_v1=obj["v1"],
        lots=[Lot(res, a, e) for res, a, e in obj["l"]],
        shortfall=obj["d"],
    )
    touched = dict(_pairs(touched_text))
    # Copies: replay changes the state's pairs in place, `touched` keeps the stored values.
    pos.pairs.update((key, Pair(p.unlocked, p.locked, p.expire_ms)) for key, p in touched.items())
    replay(pos, [Row(*values) for values in orjson.loads(tail or "[]")], unfreeze_delay_ms)
    network = (
        None
        if totals_block is None
        else StoredTotals(int(totals_block), read_at, NetworkTotals(energy_limit, energy_weight, net_limit, net_weight))
    )
    return StoredRead(
        pos,
        touched,
        obj["r"],
        {} if ended_text is None else {res: int(sun) for res, sun in orjson.loads(ended_text).items()},
        None if next_end is None else int(next_end),
        _pairs(page_text),
        after,
        limit,
        int(now_ms),
        mark_block,
        network,
        {} if drift is None else {what: int(difference) for what, difference in orjson.loads(drift)},
        None if source is None else (str(source), int(opening_block)),
    )
