"""GET /status: the status page for a person; GET /api/monitor: its data (figures and counts only).

The page is one self-contained HTML file (web/status.html: no CDN, no build step) that fetches
/api/monitor every few seconds and draws the freshness chart as inline SVG. Dead letters, the
messages held by workers and the recover action go through the admin API with a token the
operator types in (kept in the tab's sessionStorage only).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

from ledger.store.deadletters import dead_letter_counts
from web.dependency import gray_release
from web.monitor import freshness_series, health_rules, verdict
from web.monitoring import current_snapshot
from web.paths import current_paths
from web.pg import read_connection
from web.resources import resources
from web.responses import json_response

bp = Blueprint("status", __name__)

_PAGE = Path(__file__).with_name("status.html")


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
    except Exception as exc:  # noqa: BLE001 - the rest of the page still has its figures
        snap["freshness"] = snap["dead_letters"] = {"error": type(exc).__name__}
    snap["admin_enabled"] = bool(res.settings.admin_token)
    snap["gray_release"] = gray_release(res.broker_redis, res.settings, current_paths())
    return json_response({"success": True, "data": snap})
