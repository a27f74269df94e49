"""SQL for the API: keyset pages of records (the summary is ledger.store.positions).

Pages are newest first on (block_num, tx_index, op_index, id), each list served by its
`*_owner_page` index (delegations received also by `delegate_records_receiver_page`). A page after a
cursor is a row-value seek, `(block_num, tx_index, op_index, id) < (...)`, which costs the same at any
depth (measured on PostgreSQL 15: about 0.1 ms at 950 000 rows deep, against 572 ms for OFFSET); OFFSET is
only used for the shallow numbered pages the API still accepts. No count(*) anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.domain import UNFREEZE_V2
from ledger.positions import chain_time_ms, lot_status
from ledger.store.accounting import MAIN_CHECKPOINT

Key = tuple[int, int, int, int]

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
# 'withdrawable' is not stored when a lot matures: the status is decided on read, at chain time
# (ledger.positions.lot_status), which the checkpoint's block time gives.
_UNFREEZE = (
    f"SELECT {_COMMON}, 'unfreeze' AS operation_type, '{UNFREEZE_V2_CONTRACT}' AS contract_type, resource,"
    " amount, status, available_time, settled_tx_id,"
    " (SELECT block_time_ms FROM listener_checkpoint WHERE name = %(c)s) AS checkpoint_time_ms"
    " FROM unfreeze_records"
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
    # Chain-time ms until a row's status changes with no write (a lot maturing), if any row will.
    changes_in_ms: int | None = None


def fetch_records(
    conn: psycopg.Connection, kind: str, address: str, limit: int, *, offset: int = 0, after: Key | None = None
) -> RecordPage:
    """One page of `kind` records of `address`: after the key `after`, else `offset` rows in."""
    first, seek = _RECORDS[kind]
    params: dict[str, Any] = {
        "a": address,
        "off": offset,
        "n": limit + 1,
        "m": offset + limit + 1,
        "c": MAIN_CHECKPOINT,
    }
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
    return RecordPage(rows, next_key, _lot_statuses(rows) if kind == "unfreeze" else None)


def _lot_statuses(rows: list[dict[str, Any]]) -> int | None:
    """Set each lot's status at chain time; return the chain-time ms until the next one matures."""
    changes: list[int] = []
    for row in rows:
        now_ms = chain_time_ms(row.pop("checkpoint_time_ms"))
        expire_ms = int(row["available_time"].timestamp() * 1000)
        row["status"] = lot_status(row["status"], expire_ms, now_ms)
        if row["status"] == "pending":
            changes.append(expire_ms - now_ms)
    return min(changes) if changes else None
