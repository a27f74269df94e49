"""GET /api/accounts/<account>/summary: the account's positions (ledger.store.positions), cached.

GET /api/summary?pool_account_id=… or ?external_id=… is the same view with the account in the query
string, so that the platform's external id can name it as it does on every other route. (The path
form takes an id or an address only: a path segment such as `42` must mean one thing.)
"""

from __future__ import annotations

from math import ceil

from flask import Blueprint, Response, request

from ledger.store.cache import Fill
from ledger.store.positions import opening_of
from web import hot
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
            # Two different things: what the positions' own arithmetic was short of (shortfall), and
            # where state reconciliation found the chain's account state different (chain_drift,
            # workers/reconcile.py). `drift` is both under one name, as earlier clients read it.
            chain = {row["what"]: row["difference"] for row in open_drift(conn, account.address)}
            opening = opening_meta(account.address, opening_of(conn, account.address))
        data = {"account_id": account.id, "label": account.label, **result.data}
        meta: dict[str, object] = {
            "source": "database",
            "shortfall": result.shortfall,
            "chain_drift": chain,
            "drift": {**result.shortfall, **{f"chain.{what}": sun for what, sun in chain.items()}},
            "opening": opening,
        }
        payload = {"success": True, "data": data, "meta": meta}
        response = dumps(payload)
        meta["source"] = "cache"
        ttl = res.settings.cache_ttl_summary
        if result.next_change_ms is not None:
            # A lock ending or a lot maturing changes the page without any write: expire it then.
            ttl = min(ttl, ceil((result.next_change_ms - result.as_of_time_ms) / 1000))
        return Fill(response, dumps(payload), max(1, ttl))

    body, cached = res.pages.fetch(account.address, "summary", load)
    if cached:
        hot.remember(account.address, "summary", body)
    return Response(body, mimetype="application/json")


def opening_meta(address: str, opening: tuple[str, int] | None) -> dict[str, object]:
    """`meta.opening`: where the figures start. Without an opening they count only the records seen
    since the account was added, which reads like the chain's state and is not: the warning says so."""
    if opening is not None:
        return {"source": opening[0], "block": opening[1]}
    return {
        "source": None,
        "block": None,
        "warning": "no opening position: these figures count only the records the ledger saw since the account"
        f" was added, not what it held before; read it from the chain with `ledger accounts snapshot {address}`",
    }
