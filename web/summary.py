"""GET /api/accounts/<account>/summary: the account's positions (ledger.positions), cached."""

from __future__ import annotations

from math import ceil

from flask import Blueprint, Response

from ledger.cache import Fill
from ledger.drift import open_drift
from ledger.positions import read_summary
from web.params import resolve_account
from web.pg import read_connection
from web.resources import resources
from web.responses import dumps

bp = Blueprint("summary", __name__)


@bp.get("/api/accounts/<account_key>/summary")
def summary(account_key: str) -> Response:
    res = resources()
    account = resolve_account(res.accounts, account_key, "account")

    def load() -> Fill:
        with read_connection(res.pool) as conn:
            result = read_summary(conn, account.address, res.settings.unfreeze_delay_seconds * 1000)
            # Where state reconciliation found the chain's account state different (workers/reconcile.py),
            # beside what the positions' own arithmetic could not explain.
            chain = {f"chain.{row['what']}": row["difference"] for row in open_drift(conn, account.address)}
        data = {"account_id": account.id, "label": account.label, **result.data}
        meta: dict[str, object] = {"source": "database", "drift": {**result.drift, **chain}}
        payload = {"success": True, "data": data, "meta": meta}
        response = dumps(payload)
        meta["source"] = "cache"
        ttl = res.settings.cache_ttl_summary
        if result.next_change_ms is not None:
            # A lock ending or a lot maturing changes the page without any write: expire it then.
            ttl = min(ttl, ceil((result.next_change_ms - result.as_of_time_ms) / 1000))
        return Fill(response, dumps(payload), max(1, ttl))

    body, _ = res.pages.fetch(account.address, "summary", load)
    return Response(body, mimetype="application/json")
