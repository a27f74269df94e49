"""GET /status: the status page for a person; GET /api/monitor: its data (figures and counts only).

The page is one self-contained HTML file (web/status.html: no CDN, no build step) that fetches
/api/monitor every few seconds and draws the freshness chart as inline SVG. Dead letters, the
messages held by workers and the recover action go through the admin API with a token the
operator types in (kept in the tab's sessionStorage only).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from flask import Blueprint, Response

from ledger.domain import RESOURCES
from ledger.store.deadletters import dead_letter_counts
from ledger.store.jobruns import last_runs
from ledger.store.positions import opening_of
from web.dependency import gray_release
from web.drift import comparisons, open_drift
from web.monitor import compared_view, freshness_series, health_rules, verdict
from web.monitoring import current_snapshot
from web.paths import current_paths
from web.pg import read_connection
from web.positions import read_summary
from web.reclaimable import reclaim_lists
from web.resources import resources
from web.responses import json_response

bp = Blueprint("status", __name__)

_PAGE = Path(__file__).with_name("status.html")


# The operator's screen shows this many pool accounts (the first by id); the others by their API.
SHOWN_ACCOUNTS = 20
# A lot that matures within this long is "maturing soon".
SOON_MS = 7 * 86_400_000


def pool_positions(conn: psycopg.Connection, unfreeze_delay_ms: int) -> dict[str, Any]:
    """Per pool account, what an operator acts on: per resource staked / available / delegated /
    unstaking / withdrawable, the receivers with their lock's end and the time left, delegations
    whose lock has ended (reclaimable now), lots maturing soon, the shortfall of the ledger's own
    arithmetic and the differences the last state reconciliation found with the chain."""
    total_row = conn.execute("SELECT count(*) FROM pool_accounts").fetchone()
    rows = conn.execute(
        "SELECT id, address, label FROM pool_accounts ORDER BY id LIMIT %s", (SHOWN_ACCOUNTS,)
    ).fetchall()
    accounts = []
    compared = {c["account"]: c for c in comparisons(conn, [r[1] for r in rows])}
    for account_id, address, label in rows:
        found = read_summary(conn, address, unfreeze_delay_ms)
        as_of_ms = found.as_of_time_ms
        figures = found.data["resources"]
        receivers, maturing = [], []
        assert found.position is not None  # read_summary gives what it read
        # One reading of "reclaimable" for the page and GET /api/accounts/{a}/reclaimable.
        reclaimable, ending_soon, _ = reclaim_lists(found.position.pairs, as_of_ms, found.totals)
        for res in RESOURCES:
            for r in figures[res]["delegated"]["receivers"]:
                if r["locked"]:
                    end_ms = int(r["lock_end"].timestamp() * 1000)
                    receivers.append(
                        {
                            "resource": res,
                            "receiver": r["receiver_address"],
                            "locked": r["locked"],
                            "unlocked": r["unlocked"],
                            "lock_end": _iso(r["lock_end"]),
                            "seconds_left": (end_ms - as_of_ms) // 1000,
                        }
                    )
            for lot in figures[res]["unstaking"]["lots"]:
                left_ms = int(lot["expire_time"].timestamp() * 1000) - as_of_ms
                if left_ms <= SOON_MS:
                    maturing.append(
                        {
                            "resource": res,
                            "amount": lot["amount"],
                            "expire_time": _iso(lot["expire_time"]),
                            "seconds_left": left_ms // 1000,
                        }
                    )
        accounts.append(
            {
                "id": account_id,
                "address": address,
                "label": label,
                "as_of_block": found.data["as_of_block"],
                "as_of_time": _iso(found.data["as_of_time"]),
                "opening": opening_of(conn, address) is not None,
                "resources": {
                    res: {
                        "staked": figures[res]["staked"],
                        "available": figures[res]["available"],
                        "delegated": figures[res]["delegated"]["total"],
                        "unstaking": figures[res]["unstaking"]["total"],
                        "withdrawable": figures[res]["withdrawable"],
                    }
                    for res in RESOURCES
                    if res != "TRON_POWER"
                },
                "receivers": sorted(receivers, key=lambda r: r["seconds_left"]),
                "reclaimable": [{**r, "lock_end": _iso(r["lock_end"]) if r["lock_end"] else None} for r in reclaimable],
                "ending_within_hour": [{**r, "lock_end": _iso(r["lock_end"])} for r in ending_soon],
                "maturing": sorted(maturing, key=lambda r: r["seconds_left"]),
                "shortfall": found.shortfall,
                "chain_drift": [
                    {"what": d["what"], "difference": d["difference"], "checked_block": d["checked_block"]}
                    for d in open_drift(conn, address)
                ],
                "compared": compared_view(compared.get(address)),
            }
        )
    state_runs = [run for run in last_runs(conn, per_job=1) if run["job"] == "state"]
    last_state = state_runs[0] if state_runs else None
    return {
        "total": int(total_row[0]) if total_row else 0,
        "shown": len(accounts),
        "accounts": accounts,
        "last_state_run": None
        if last_state is None
        else {"started": _iso(last_state["window_start"]), "finished": _iso(last_state["finished_at"])},
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@bp.get("/status")
def status_page() -> Response:
    return Response(_PAGE.read_bytes(), mimetype="text/html", headers={"Cache-Control": "no-store"})


@bp.get("/api/monitor")
def monitor() -> Response:
    res = resources()
    snap = current_snapshot()
    snap["rules"] = health_rules(snap, min_reads=res.settings.hit_rate_min_reads)
    snap["health"], snap["reasons"] = verdict(snap["rules"])
    try:
        with read_connection(res.pool, timeout=0.3) as conn:
            snap["freshness"] = freshness_series(conn)
            snap["dead_letters"] = dead_letter_counts(conn)
            snap["accounts"] = pool_positions(conn, res.settings.unfreeze_delay_seconds * 1000)
    except Exception as exc:  # noqa: BLE001 - the rest of the page still has its figures
        snap["freshness"] = snap["dead_letters"] = snap["accounts"] = {"error": type(exc).__name__}
    snap["admin_enabled"] = bool(res.settings.admin_token)
    snap["gray_release"] = gray_release(res.broker_redis, res.settings, current_paths())
    return json_response({"success": True, "data": snap})
