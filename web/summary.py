"""GET /api/accounts/<account>/summary: the account's positions (ledger.store.positions), cached.

GET /api/summary?pool_account_id=… or ?external_id=… is the same view with the account in the query
string, so that the platform's external id can name it as it does on every other route. (The path
form takes an id or an address only: a path segment such as `42` must mean one thing.)
"""

from __future__ import annotations

from math import ceil

from flask import Blueprint, Response, request

from ledger.store.cache import Fill
from web.drift import open_drift
from web.params import require_account, resolve_account
from web.pg import read_connection
from web.positions import read_summary
from web.resources import resources
from web.responses import dumps

bp = Blueprint("summary", __name__)


@bp.get("/api/accounts/<account_key>/summary")
@bp.get("/api/summary", defaults={"account_key": None})
def summary(account_key: str | None) -> Response:
    res = resources()
    if account_key is None:
        account = require_account(res.accounts, request.args).account
    else:
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
