"""Reading what state reconciliation stored (`drift`, `recovered_operations`; writers in
workers/reconcile.py): for the summary's `meta.drift`, the drift list and the status page."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

_COLUMNS = (
    "id, account, what, chain_amount, ledger_amount, difference, since_block, checked_block,"
    " first_seen, last_seen, resolved_block, resolved_at"
)


def open_drift(conn: psycopg.Connection, account: str) -> list[dict[str, Any]]:
    """The account's unresolved differences with the chain, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM drift WHERE account = %s AND resolved_block IS NULL ORDER BY since_block, what",
            (account,),
        ).fetchall()
    return [_jsonable(row) for row in rows]


def list_drift(
    conn: psycopg.Connection, account: str | None, *, include_resolved: bool, limit: int
) -> list[dict[str, Any]]:
    where = ["true"]
    params: dict[str, Any] = {"n": limit}
    if account is not None:
        where.append("account = %(a)s")
        params["a"] = account
    if not include_resolved:
        where.append("resolved_block IS NULL")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM drift WHERE {' AND '.join(where)} ORDER BY last_seen DESC, id DESC LIMIT %(n)s",
            params,
        ).fetchall()
    return [_jsonable(row) for row in rows]


def recovered_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM recovered_operations").fetchone()
    return int(row[0]) if row else 0


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # Sums are NUMERIC (exact past 2^53): integers in JSON, never floats.
    for key in ("chain_amount", "ledger_amount", "difference"):
        row[key] = int(row[key])
    return row
