"""SQL for the API: keyset pages of records and the per-account summary.

Pages are newest first on (block_num, tx_index, op_index, id), each list served by its
`*_owner_page` index (delegations received also by `delegate_records_receiver_page`). A page after a
cursor is a row-value seek, `(block_num, tx_index, op_index, id) < (...)`, which costs the same at any
depth (measured on PostgreSQL 15: about 0.1 ms at 950 000 rows deep, against 572 ms for OFFSET); OFFSET is
only used for the shallow numbered pages the API still accepts. No count(*) anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.domain import FREEZE_V1, RESOURCES, UNFREEZE_V1, UNFREEZE_V2

Key = tuple[int, int, int, int]

LEGACY_CONTRACTS = (FREEZE_V1, UNFREEZE_V1)
UNFREEZE_V2_CONTRACT = UNFREEZE_V2  # the only contract that creates unfreeze lots

_ORDER = "ORDER BY block_num DESC, tx_index DESC, op_index DESC, id DESC"
# Casts match the column types, so the row comparison is an index condition.
_SEEK = "AND (block_num, tx_index, op_index, id) < (%(b)s::bigint, %(t)s::integer, %(o)s::smallint, %(i)s::bigint)"
_COMMON = "id, tx_id, op_index, block_num, tx_index, block_time, owner_address"
_STAKE = f"SELECT {_COMMON}, operation_type, contract_type, resource, amount, status FROM stake_records"
_DELEGATE = (
    f"SELECT {_COMMON}, operation_type, contract_type, resource, amount, status,"
    " receiver_address, lock, lock_period, lock_expire_time FROM delegate_records"
)
# 'withdrawable' is not stored when a lot matures; it is derived here, at read time.
_UNFREEZE = (
    f"SELECT {_COMMON}, 'unfreeze' AS operation_type, '{UNFREEZE_V2_CONTRACT}' AS contract_type, resource,"
    " amount, CASE WHEN status = 'pending' AND available_time <= now() THEN 'withdrawable' ELSE status END"
    " AS status, available_time, settled_tx_id FROM unfreeze_records"
)


def _single(select: str, seek: str) -> str:
    return f"{select} WHERE owner_address = %(a)s {seek} {_ORDER} OFFSET %(off)s LIMIT %(n)s"


def _delegate(seek: str) -> str:
    # Rows where the account is the owner OR the receiver: two index seeks, each cut to what the
    # page can use, then merged. `owner_address <> account` keeps a row that has both from
    # appearing twice (TRON refuses self-delegation, but the ledger should not depend on it).
    return (
        f"({_DELEGATE} WHERE owner_address = %(a)s {seek} {_ORDER} LIMIT %(m)s)"
        " UNION ALL "
        f"({_DELEGATE} WHERE receiver_address = %(a)s AND owner_address <> %(a)s {seek} {_ORDER} LIMIT %(m)s)"
        f" {_ORDER} OFFSET %(off)s LIMIT %(n)s"
    )


# kind -> (first/numbered pages, pages after a cursor)
_RECORDS: dict[str, tuple[str, str]] = {
    "stake": (_single(_STAKE, ""), _single(_STAKE, _SEEK)),
    "delegate": (_delegate(""), _delegate(_SEEK)),
    "unfreeze": (_single(_UNFREEZE, ""), _single(_UNFREEZE, _SEEK)),
}
KINDS = tuple(_RECORDS)


@dataclass(frozen=True)
class RecordPage:
    rows: list[dict[str, Any]]  # at most `limit`, newest first, JSON-ready
    next_key: Key | None  # sort key of the last row when more rows follow


def fetch_records(
    conn: psycopg.Connection, kind: str, address: str, limit: int, *, offset: int = 0, after: Key | None = None
) -> RecordPage:
    """One page of `kind` records of `address`: after the key `after`, else `offset` rows in."""
    first, seek = _RECORDS[kind]
    params: dict[str, Any] = {"a": address, "off": offset, "n": limit + 1, "m": offset + limit + 1}
    if after is not None:
        params.update(b=after[0], t=after[1], o=after[2], i=after[3])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(seek if after is not None else first, params)
        rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_key: Key | None = None
    if more:
        last = rows[-1]
        next_key = (last["block_num"], last["tx_index"], last["op_index"], last["id"])
    for row in rows:
        del row["tx_index"]  # part of the sort key, not of the API's row
    return RecordPage(rows, next_key)


# -- summary ----------------------------------------------------------------------------------------

# Staked now, per resource: Σfreeze − Σunfreeze + Σ re-staked by cancel-all, from rows that are
# not failed or orphaned (pending ones count: they are on chain, just not solid yet). Legacy V1
# stakes are a separate balance on chain, so they are summed separately.
_STAKED = """
SELECT resource, contract_type = ANY(%(legacy)s) AS legacy,
       sum(CASE operation_type WHEN 'unfreeze' THEN -amount ELSE amount END) AS amount
FROM stake_records
WHERE owner_address = %(a)s AND status IN ('pending', 'confirmed') AND resource IS NOT NULL
  AND operation_type IN ('freeze', 'unfreeze', 'cancel_all_unfreeze')
GROUP BY 1, 2
"""

# Delegated out per receiver, resource and lock: Σdelegate − Σundelegate.
_DELEGATED = """
SELECT receiver_address, resource, lock,
       sum(CASE operation_type WHEN 'undelegate' THEN -amount ELSE amount END) AS amount,
       max(lock_expire_time) FILTER (WHERE operation_type = 'delegate' AND lock) AS lock_expire_time
FROM delegate_records
WHERE owner_address = %(a)s AND status IN ('pending', 'confirmed')
GROUP BY 1, 2, 3
ORDER BY 2, 1, 3
"""

# Open unfreeze lots (index unfreeze_records_open); now() is the transaction's start, as_of.
_LOTS = """
SELECT id, tx_id, resource, amount, block_time, available_time,
       CASE WHEN available_time <= now() THEN 'withdrawable' ELSE 'pending' END AS status
FROM unfreeze_records
WHERE owner_address = %(a)s AND status IN ('pending', 'withdrawable')
ORDER BY available_time, id
"""


@dataclass(frozen=True)
class Summary:
    data: dict[str, Any]
    next_change: datetime | None  # when a lot matures, changing the summary without a write


def fetch_summary(conn: psycopg.Connection, address: str) -> Summary:
    params = {"a": address, "legacy": list(LEGACY_CONTRACTS)}
    # One snapshot for the three statements, so they describe the same moment.
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        staked = cur.execute(_STAKED, params).fetchall()
        delegated = cur.execute(_DELEGATED, params).fetchall()
        lots = cur.execute(_LOTS, params).fetchall()
        as_of = cur.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]

    v2 = dict.fromkeys(RESOURCES, 0)
    v1 = dict.fromkeys(RESOURCES, 0)
    for row in staked:
        (v1 if row["legacy"] else v2)[row["resource"]] += int(row["amount"])  # NUMERIC -> exact int

    positions = _net_positions(delegated)
    by_resource = {r: {"total": 0, "locked": 0, "unlocked": 0} for r in RESOURCES}
    for p in positions:
        totals = by_resource[p["resource"]]
        totals["total"] += p["amount"]
        totals["locked" if p["lock"] else "unlocked"] += p["amount"]

    withdrawable = 0
    pending = dict.fromkeys(RESOURCES, 0)
    next_change: datetime | None = None
    out_lots = []
    for lot in lots:
        if lot["status"] == "withdrawable":
            withdrawable += lot["amount"]
        else:
            pending[lot["resource"]] += lot["amount"]
            next_change = lot["available_time"] if next_change is None else min(next_change, lot["available_time"])
        out_lots.append(lot)

    data = {
        "owner_address": address,
        "as_of": as_of,
        "staked": {"v2": v2, "legacy_v1": v1},
        "delegated_out": {"by_resource": by_resource, "positions": positions},
        "unfreezing": {"pending_by_resource": pending, "lots": out_lots},
        "withdrawable_now": withdrawable,
    }
    return Summary(data, next_change)


def _net_positions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Positions per (receiver, resource, lock), netted as the chain nets them.

    An undelegation carries no lock flag and is stored unlocked, but once a lock has expired the
    chain takes what the unlocked position lacks from the (expired) locked one. So an unlocked
    position that sums below zero passes its deficit on to the locked position of the same
    receiver and resource.
    """
    pairs: dict[tuple[str, str], dict[bool, dict[str, Any]]] = {}
    for row in rows:
        pairs.setdefault((row["receiver_address"], row["resource"]), {})[row["lock"]] = {
            "receiver_address": row["receiver_address"],
            "resource": row["resource"],
            "lock": row["lock"],
            "amount": int(row["amount"]),
            "lock_expire_time": row["lock_expire_time"],
        }
    positions: list[dict[str, Any]] = []
    for by_lock in pairs.values():
        unlocked, locked = by_lock.get(False), by_lock.get(True)
        if unlocked is not None and locked is not None and unlocked["amount"] < 0:
            locked["amount"] += unlocked["amount"]
            unlocked["amount"] = 0
        positions.extend(p for p in (unlocked, locked) if p is not None and p["amount"] != 0)
    return positions
