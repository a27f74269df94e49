"""GET /api/{stake,delegate,unfreeze}/records: keyset pages of an account's records, cached.

A hit is one Redis call that returns the stored response bytes, sent as they are. On a miss the
page is read from PostgreSQL and two encodings are made: the one returned now says
`"source": "database"`, the one stored says `"source": "cache"`. The gray release may send the
account the legacy way (`"legacy"`), and when PostgreSQL fails with no cached page the legacy path
answers (`"fallback"`): web/paths.py decides both, in either shape.

GET /compat/api/{stake,delegate,unfreeze}/records is the same view with `shape="compat"`: there
`pool_account_id` is the platform's external id, and the native page is rendered by
web/compat.py before it is encoded. Its pages are cached under their own key suffix (with the
external id in it: the rows carry it), beside the account's native pages, so the account's
generation number invalidates both.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil
from typing import Any

from flask import Blueprint, Response, request

from ledger.store.cache import Fill
from web import hot
from web.compat import compat_page
from web.cursor import Cursor, CursorError, decode_cursor
from web.params import parse_limit, parse_page, require_account
from web.paths import (
    DATABASE_DOWN,
    RECORDS,
    count_read,
    current_paths,
    fallback_response,
    legacy_response,
    shadow_sample,
)
from web.pg import read_connection
from web.queries import KINDS, RecordPage, fetch_records
from web.resources import resources
from web.responses import bad_request, dumps

bp = Blueprint("records", __name__)

NATIVE, COMPAT = "native", "compat"
Render = Callable[[dict[str, Any]], dict[str, Any]]

_CURSOR_HELP = "pass meta.next_cursor from the previous page of the same list, unchanged"


def records(kind: str, shape: str) -> Response:
    res = resources()
    args = request.args
    limit = parse_limit(args)
    cursor = _parse_cursor(args.get("cursor"), res.settings.cursor_keys)
    if cursor is not None:
        if "page" in args:
            raise bad_request("give either page or cursor, not both")
        page = cursor.page
    else:
        page = parse_page(args, limit)
    key = args.get("pool_account_id")
    try:
        ref = require_account(res.accounts, args, compat=shape == COMPAT)
    except DATABASE_DOWN:
        # An external id cannot be mapped to an address without the database; an address can.
        return fallback_response(kind, key if shape == NATIVE else None, None, page, limit)
    account = ref.account

    settings = res.settings
    if cursor is not None:
        if cursor.kind != kind or cursor.account_id != account.id:
            raise bad_request(
                f"cursor belongs to another list ({cursor.kind} records of account {cursor.account_id}, "
                f"not {kind} records of account {account.id}); {_CURSOR_HELP}"
            )
        b, t, o, i = cursor.key
        suffix = f"rec:{kind}:{limit}:c{page}.{b}.{t}.{o}.{i}"
        ttl = settings.cache_ttl_historical
    else:
        suffix = f"rec:{kind}:{limit}:p{page}"
        ttl = settings.cache_ttl_realtime
    render, prefix = _shape(kind, shape, ref.external_id)
    legacy = legacy_response(kind, account.address, page, limit, render)
    if legacy is not None:
        return legacy

    def load() -> Fill:
        with read_connection(res.pool) as conn:
            result = fetch_records(
                conn,
                kind,
                account.address,
                limit,
                offset=(page - 1) * limit if cursor is None else 0,
                after=cursor.key if cursor is not None else None,
            )
        return _fill(kind, account.id, page, limit, result, ttl, settings.cursor_keys[0], render)

    try:
        body, cached = res.pages.fetch(account.address, prefix + suffix, load)
    except DATABASE_DOWN:
        return fallback_response(kind, key, account.address, page, limit, render)
    shadow_sample(kind, account.address, page, limit, cursor is not None)
    count_read(current_paths(), RECORDS)
    if cached:
        hot.remember(account.address, prefix + suffix, body, RECORDS, hot.Shadow(kind, page, limit, cursor is not None))
    return Response(body, mimetype="application/json")


# A static rule per kind and shape rather than one with an `any` converter: werkzeug matches a static
# segment by a dict lookup and a converter by regular expressions, which cost a cached page more
# than the rest of its routing. An endpoint each, too: after a match werkzeug compares the rule with
# every rule registered before it under the same endpoint (its redirect to a rule's defaults).
for _kind in KINDS:
    for _prefix, _shape_name in (("", NATIVE), ("/compat", COMPAT)):
        bp.add_url_rule(
            f"{_prefix}/api/{_kind}/records",
            endpoint=f"{_shape_name}_{_kind}",
            view_func=records,
            methods=["GET"],
            defaults={"kind": _kind, "shape": _shape_name},
        )


def _parse_cursor(token: str | None, secrets: tuple[bytes, ...]) -> Cursor | None:
    if token is None:
        return None
    try:
        return decode_cursor(token.strip(), secrets)
    except CursorError as exc:
        raise bad_request(f"cursor is not valid ({exc}); {_CURSOR_HELP}") from None


def _shape(kind: str, shape: str, external_id: str | None) -> tuple[Render, str]:
    """How a native page is rendered in `shape`, and the cache key prefix of that shape's pages."""
    if shape == NATIVE:
        return _native, ""
    if external_id is None:
        raise RuntimeError("a compatibility route resolved its account by something other than an external id")

    def render(payload: dict[str, Any]) -> dict[str, Any]:
        return compat_page(kind, payload, external_id)

    # The rows carry the external id, so it is part of the key; its length too, so that no two
    # ids' prefixes can be the same whatever characters they hold.
    return render, f"compat:{len(external_id)}:{external_id}:"


def _native(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def _fill(
    kind: str, account_id: int, page: int, limit: int, result: RecordPage, ttl: int, secret: bytes, render: Render
) -> Fill:
    next_cursor = None
    if result.next_key is not None:
        next_cursor = Cursor(kind, account_id, page + 1, result.next_key).encode(secret)
    meta = {"page": page, "limit": limit, "source": "database", "next_cursor": next_cursor}
    payload = {"success": True, "data": result.rows, "meta": meta}
    response = dumps(render(payload))
    meta["source"] = "cache"
    return Fill(response, dumps(render(payload)), _page_ttl(result, ttl))


def _page_ttl(result: RecordPage, ttl: int) -> int:
    """A lot still pending turns 'withdrawable' with no write to invalidate the page; expire then."""
    if result.changes_in_ms is not None:
        ttl = min(ttl, ceil(result.changes_in_ms / 1000))
    return max(1, ttl)
