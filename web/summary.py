"""GET /api/accounts/<account>/summary: the account's positions (ledger.store.positions), cached.

GET /api/summary?pool_account_id=… or ?external_id=… is the same view with the account in the query
string, so that the platform's external id can name it as it does on every other route. (The path
form takes an id or an address only: a path segment such as `42` must mean one thing.)

The receivers come in pages of `limit` (receiver, resource) records in that order, the totals over
all of them in every page; `meta.next_cursor` leads to the next page (web/cursor.py).
"""

from __future__ import annotations

from math import ceil

from flask import Blueprint, Response, request

from ledger.store.cache import Fill
from ledger.store.positions import opening_of
from web import hot
from web.cursor import CursorError, ReceiverCursor, decode_receiver_cursor
from web.drift import open_drift
from web.params import int_param, require_account, resolve_account
from web.paths import SUMMARY, count_read, current_paths
from web.pg import read_connection
from web.positions import DEFAULT_RECEIVERS, MAX_RECEIVERS, read_summary
from web.resources import resources
from web.responses import bad_request, dumps

bp = Blueprint("summary", __name__)


@bp.get("/api/accounts/<account_key>/summary")
@bp.get("/api/summary", defaults={"account_key": None})
def summary(account_key: str | None) -> Response:
    res = resources()
    if account_key is None:
        account = require_account(res.accounts, request.args).account
    else:
        account = resolve_account(res.accounts, account_key, "account")
    limit = int_param(request.args, "limit", DEFAULT_RECEIVERS, 1, MAX_RECEIVERS)
    after = _after(request.args.get("cursor"), res.settings.cursor_keys, account.id)
    # The first page of the default size keeps the page key of a summary without paging.
    suffix = "summary" if limit == DEFAULT_RECEIVERS else f"summary.{limit}"
    if after is not None:
        suffix += f".{after[0]}.{after[1]}"

    def load() -> Fill:
        with read_connection(res.pool) as conn:
            result = read_summary(
                conn, account.address, res.settings.unfreeze_delay_seconds * 1000, after=after, limit=limit
            )
            # Two different things: what the positions' own arithmetic was short of (shortfall), and
            # where state reconciliation found the chain's account state different (chain_drift,
            # workers/reconcile.py). `drift` is both under one name, as earlier clients read it.
            if result.chain_drift is not None:
                chain, found = result.chain_drift, result.opening
            else:
                chain = {row["what"]: row["difference"] for row in open_drift(conn, account.address)}
                found = opening_of(conn, account.address)
            opening = opening_meta(account.address, found)
        data = {"account_id": account.id, "label": account.label, **result.data}
        meta: dict[str, object] = {
            "source": "database",
            "shortfall": result.shortfall,
            "chain_drift": chain,
            "drift": {**result.shortfall, **{f"chain.{what}": sun for what, sun in chain.items()}},
            "opening": opening,
            "limit": limit,
            "next_cursor": None
            if result.next_key is None
            else ReceiverCursor(account.id, result.next_key).encode(res.settings.cursor_keys[0]),
        }
        payload = {"success": True, "data": data, "meta": meta}
        response = dumps(payload)
        meta["source"] = "cache"
        ttl = res.settings.cache_ttl_summary
        if result.next_change_ms is not None:
            # A lock ending or a lot maturing changes the page without any write: expire it then.
            ttl = min(ttl, ceil((result.next_change_ms - result.as_of_time_ms) / 1000))
        return Fill(response, dumps(payload), max(1, ttl))

    body, cached = res.pages.fetch(account.address, suffix, load)
    count_read(current_paths(), SUMMARY)
    if cached:
        hot.remember(account.address, suffix, body, SUMMARY)
    return Response(body, mimetype="application/json")


def _after(token: str | None, secrets: tuple[bytes, ...], account_id: int) -> tuple[str, str] | None:
    """The receiver record a page starts after, from `cursor` (meta.next_cursor of the page before)."""
    if token is None:
        return None
    help_text = "pass meta.next_cursor from the previous page of the same account's summary, unchanged"
    try:
        cursor = decode_receiver_cursor(token.strip(), secrets)
    except CursorError as exc:
        raise bad_request(f"cursor is not valid ({exc}); {help_text}") from None
    if cursor.account_id != account_id:
        raise bad_request(f"cursor belongs to another account's summary ({cursor.account_id}); {help_text}")
    return cursor.key


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
