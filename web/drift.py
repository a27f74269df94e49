"""Reading what state reconciliation stored (`drift`, `recovered_operations`, `chain_comparisons`;
writers in workers/reconcile.py): for the summary's `meta.drift`, the drift list, the per-account
comparisons and the status page."""

from __future__ import annotations

from collections.abc import Sequence
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


def comparisons(conn: psycopg.Connection, accounts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per pool account (or those of `accounts`): when state reconciliation last compared it with the
    chain, at which solidified block, and the result; and its last attempt, with why it did not
    compare when it did not. An account never compared says so, not "agrees"."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT a.address AS account, c.compared_at, c.block, c.differing, c.attempted_at, c.reason"
            " FROM pool_accounts a LEFT JOIN chain_comparisons c ON c.account = a.address"
            " WHERE %(all)s OR a.address = ANY(%(a)s) ORDER BY a.id",
            {"all": accounts is None, "a": list(accounts or ())},
        ).fetchall()
    for row in rows:
        row["result"] = comparison_result(row["differing"], row["compared_at"] is not None)
    return list(rows)


def comparison_result(differing: int | None, compared: bool) -> str:
    if not compared or differing is None:
        return "never compared"
    return "agrees" if differing == 0 else f"differs in {differing} figure(s)"


def recovered_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM recovered_operations").fetchone()
    return int(row[0]) if row else 0


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # Sums are NUMERIC (exact past 2^53): integers in JSON, never floats.
    for key in ("chain_amount", "ledger_amount", "difference"):
        row[key] = int(row[key])
    return row
