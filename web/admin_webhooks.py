"""Admin routes for webhook subscriptions (ledger/store/webhooks.py), on the admin blueprint (web/admin.py:
Bearer ADMIN_TOKEN). The same operations as `ledger webhooks`:

- GET    /admin/webhooks                      subscriptions, with the delivery figures
- POST   /admin/webhooks {"url", "types", "accounts", "from_start"}   add; the answer holds the secret, once
- POST   /admin/webhooks/<id>/disable | enable
- POST   /admin/webhooks/<id>/rotate-secret {"overlap_hours"}          a new secret, once; the old one
                                                                       signs too for the overlap
- DELETE /admin/webhooks/<id>
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request
from psycopg_pool import ConnectionPool

from ledger.domain import INT64_MAX
from ledger.store import webhooks
from web.pg import read_connection
from web.resources import resources
from web.responses import bad_request, json_response, not_found, shown

log = logging.getLogger(__name__)

_ADD_FIELDS = {"url", "types", "accounts", "from_start"}


def register(bp: Blueprint, admin_pool: Any) -> None:
    """Add the routes to the admin blueprint; `admin_pool()` gives the read-write pool."""

    def pool() -> ConnectionPool:
        found: ConnectionPool = admin_pool()
        return found

    @bp.get("/webhooks")
    def list_webhooks() -> Response:
        with read_connection(pool()) as conn:
            subs = [s.to_json() for s in webhooks.list_subscriptions(conn)]
            figures = webhooks.delivery_figures(conn)
        return json_response({"success": True, "data": subs, "meta": {"deliveries": figures}})

    @bp.post("/webhooks")
    def add_webhook() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str) or set(body) - _ADD_FIELDS:
            raise bad_request(
                'the body must be a JSON object: {"url": "https://...", "types": [...], "accounts": [...],'
                ' "from_start": false} (types and accounts optional: all)'
            )
        types, accounts = body.get("types", []), body.get("accounts", [])
        if not (_strings(types) and _strings(accounts) and isinstance(body.get("from_start", False), bool)):
            raise bad_request("types and accounts must be lists of strings, from_start a boolean")
        try:
            with read_connection(pool()) as conn:
                sub, secret = webhooks.add_subscription(
                    conn,
                    body["url"],
                    types=types,
                    accounts=accounts,
                    allow_private=resources().settings.webhook_allow_private,
                    from_start=bool(body.get("from_start", False)),
                )
        except webhooks.WebhookError as exc:
            raise bad_request(str(exc)) from None
        log.warning("admin: webhook subscription %s added for %s", sub.id, sub.url)
        return json_response({"success": True, "data": {**sub.to_json(), "secret": secret}}, 201)

    @bp.post("/webhooks/<sub_id>/<any(disable, enable):action>")
    def switch_webhook(sub_id: str, action: str) -> Response:
        with read_connection(pool()) as conn:
            sub = webhooks.set_enabled(conn, _id(sub_id), action == "enable")
        if sub is None:
            raise not_found(f"no webhook subscription {sub_id}")
        log.warning("admin: webhook subscription %s %sd", sub_id, action)
        return json_response({"success": True, "data": sub.to_json()})

    @bp.post("/webhooks/<sub_id>/rotate-secret")
    def rotate_webhook_secret(sub_id: str) -> Response:
        body = request.get_json(silent=True) if request.content_length else {}
        if not isinstance(body, dict) or set(body) - {"overlap_hours"}:
            raise bad_request('the body, if any, must be a JSON object: {"overlap_hours": 24}')
        hours = body.get("overlap_hours", 24)
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not 0 <= hours <= 24 * 30:
            raise bad_request("overlap_hours must be a number of hours from 0 to 720")
        with read_connection(pool()) as conn:
            secret = webhooks.rotate_secret(conn, _id(sub_id), float(hours) * 3600)
        if secret is None:
            raise not_found(f"no webhook subscription {sub_id}")
        log.warning("admin: webhook subscription %s has a new secret", sub_id)
        return json_response({"success": True, "data": {"id": int(sub_id), "secret": secret}})

    @bp.delete("/webhooks/<sub_id>")
    def remove_webhook(sub_id: str) -> Response:
        with read_connection(pool()) as conn:
            removed = webhooks.remove_subscription(conn, _id(sub_id))
        if not removed:
            raise not_found(f"no webhook subscription {sub_id}")
        log.warning("admin: webhook subscription %s removed", sub_id)
        return json_response({"success": True, "data": {"removed": int(sub_id)}})


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _id(raw: str) -> int:
    if not (raw.isdigit() and raw.isascii() and len(raw) <= 19 and 1 <= int(raw) <= INT64_MAX):
        raise bad_request(f"webhook id must be a positive integer (got {shown(raw)})")
    return int(raw)
