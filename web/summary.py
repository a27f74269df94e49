"""GET /api/accounts/<account>/summary: staked, delegated and unfreezing totals, cached."""

from __future__ import annotations

from datetime import UTC, datetime
from math import ceil

from flask import Blueprint, Response

from ledger.cache import Fill
from web.params import resolve_account
from web.pg import read_connection
from web.queries import fetch_summary
from web.resources import resources
from web.responses import dumps

bp = Blueprint("summary", __name__)


@bp.get("/api/accounts/<account_key>/summary")
def summary(account_key: str) -> Response:
    res = resources()
    account = resolve_account(res.accounts, account_key, "account")

    def load() -> Fill:
        with read_connection(res.pool) as conn:
            result = fetch_summary(conn, account.address)
        data = {"account_id": account.id, "label": account.label, **result.data}
        meta = {"source": "database"}
        payload = {"success": True, "data": data, "meta": meta}
        response = dumps(payload)
        meta["source"] = "cache"
        ttl = res.settings.cache_ttl_summary
        if result.next_change is not None:
            # A lot maturing changes withdrawable_now without any write: expire the page then.
            ttl = min(ttl, ceil((result.next_change - datetime.now(UTC)).total_seconds()))
        return Fill(response, dumps(payload), max(1, ttl))

    body, _ = res.pages.fetch(account.address, "summary", load)
    return Response(body, mimetype="application/json")
