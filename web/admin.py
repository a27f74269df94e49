"""The admin API, under /admin, behind ADMIN_TOKEN: everything that changes state or shows message contents.

Registered only when ADMIN_TOKEN is set (otherwise every /admin route is a 404). Each request must
carry `Authorization: Bearer <token>`; the comparison is constant-time (`hmac.compare_digest`),
so response time says nothing about how much of a guess was right. A missing or wrong token is a
401 with `WWW-Authenticate: Bearer`.

Routes (JSON):
- GET    /admin/dead-letters?limit&before_id&actor&error   list, newest first (with args and errors)
- GET    /admin/dead-letters/<id>                          one, with its traceback
- POST   /admin/dead-letters/<id>/requeue                  send it again (retries reset)
- POST   /admin/dead-letters/requeue?actor=NAME | ?all=true  requeue all of one actor, or all
- DELETE /admin/dead-letters/<id>                          purge one
- POST   /admin/dead-letters/purge?actor=NAME | ?all=true    purge all of one actor, or all
- GET    /admin/in-flight                                  messages held by each worker, alive or not
- POST   /admin/recover                                    put back messages held by dead workers
- GET    /admin/rollout                                    the gray release setting (ledger/store/rollout.py)
- PUT    /admin/rollout {"new_percent", "shadow_percent"}  change either (new_percent 0 = rollback);
                                                           every web process follows within
                                                           ROLLOUT_REFRESH_SECONDS
- /admin/webhooks...                                       webhook subscriptions (web/admin_webhooks.py)
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState
from psycopg_pool import ConnectionPool
from werkzeug.routing import BaseConverter

from ledger.coordination.inflight import held_messages, is_redis_broker
from ledger.coordination.recovery import recover_stranded
from ledger.domain import INT64_MAX
from ledger.store import deadletters as dl
from ledger.store.accounts import tracked_addresses
from ledger.store.rollout import Rollout, read_rollout, split_accounts, write_rollout
from web.admin_webhooks import register as webhook_routes
from web.params import int_param
from web.paths import current_paths
from web.pg import read_connection
from web.resources import resources
from web.responses import ApiError, bad_request, json_response, not_found, shown

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")


class _DeadLetterId(BaseConverter):
    """A dead letter's id segment: anything but the bulk routes' names (`purge`, `requeue`), so that
    those paths match only their own routes (their Allow header lists only their methods). What
    the segment holds is checked by `_id`, with a 400 that says what an id looks like."""

    regex = r"(?!(?:purge|requeue)(?![^/]))[^/]+"


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["dead_letter_id"] = _DeadLetterId


_MAX_LIMIT = 200


@bp.before_request
def _authenticate() -> None:
    token = resources().settings.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not (token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())):
        raise ApiError(401, "unauthorized", "this route needs 'Authorization: Bearer <ADMIN_TOKEN>'")


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # message contents must not sit in a proxy cache
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ledger admin"'
    return response


def _admin_pool() -> ConnectionPool:
    pool = resources().admin_pool
    assert pool is not None  # the blueprint is registered only with a token, which makes the pool
    return pool


def _adopt(conn: Any) -> None:
    """Record dead letters only the broker knows (see ledger.store.deadletters), so lists are complete."""
    res = resources()
    if is_redis_broker(res.broker):
        dl.adopt_broker_dead_letters(
            conn, res.broker_redis, res.settings.queue_name, secrets=(res.settings.tron_api_key,)
        )


@bp.get("/dead-letters")
def list_dead_letters() -> Response:
    limit = int_param(request.args, "limit", 50, 1, _MAX_LIMIT)
    before_id = int_param(request.args, "before_id", 0, 1, INT64_MAX) or None
    actor = request.args.get("actor") or None
    error = request.args.get("error") or None
    with read_connection(_admin_pool()) as conn:
        _adopt(conn)
        rows = dl.list_dead_letters(conn, limit=limit + 1, before_id=before_id, actor=actor, error=error)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row.pop("traceback", None)  # long; GET /admin/dead-letters/<id> has it
    meta = {"limit": limit, "next_before_id": rows[-1]["id"] if more else None}
    return json_response({"success": True, "data": rows, "meta": meta})


@bp.get("/dead-letters/<dead_letter_id:dl_id>")
def show_dead_letter(dl_id: str) -> Response:
    with read_connection(_admin_pool()) as conn:
        row = dl.get_dead_letter(conn, _id(dl_id))
    if row is None:
        raise not_found(f"no dead letter {dl_id}")
    return json_response({"success": True, "data": row})


@bp.post("/dead-letters/<dead_letter_id:dl_id>/requeue")
def requeue_one(dl_id: str) -> Response:
    with read_connection(_admin_pool()) as conn:
        message_id = dl.requeue_dead_letter(conn, resources().broker, _id(dl_id))
    if message_id is None:
        raise not_found(f"no dead letter {dl_id}")
    log.warning("admin: requeued dead letter %s (message %s)", dl_id, message_id)
    return json_response({"success": True, "data": {"requeued": [message_id]}})


@bp.post("/dead-letters/requeue")
def requeue_all() -> Response:
    actor = _bulk_actor()
    with read_connection(_admin_pool()) as conn:
        _adopt(conn)
        sent = dl.requeue_dead_letters(conn, resources().broker, actor=actor)
    log.warning("admin: requeued %d dead letter(s)%s", len(sent), f" of {actor}" if actor else "")
    return json_response({"success": True, "data": {"requeued": sent}})


@bp.delete("/dead-letters/<dead_letter_id:dl_id>")
def purge_one(dl_id: str) -> Response:
    res = resources()
    with read_connection(_admin_pool()) as conn:
        count = dl.purge_dead_letters(conn, res.broker_redis, dl_id=_id(dl_id))
    if not count:
        raise not_found(f"no dead letter {dl_id}")
    log.warning("admin: purged dead letter %s", dl_id)
    return json_response({"success": True, "data": {"purged": count}})


@bp.post("/dead-letters/purge")
def purge_all() -> Response:
    res = resources()
    actor = _bulk_actor()
    with read_connection(_admin_pool()) as conn:
        _adopt(conn)
        count = dl.purge_dead_letters(conn, res.broker_redis, actor=actor)
    log.warning("admin: purged %d dead letter(s)%s", count, f" of {actor}" if actor else "")
    return json_response({"success": True, "data": {"purged": count}})


@bp.get("/in-flight")
def in_flight() -> Response:
    res = resources()
    if not is_redis_broker(res.broker):
        raise ApiError(501, "not_implemented", "messages held by workers are read from the Redis broker only")
    timeout_ms = int(res.settings.worker_heartbeat_timeout * 1000)
    holds = held_messages(res.broker_redis, res.settings.queue_name, heartbeat_timeout_ms=timeout_ms)
    data = [
        {
            "worker_id": h.worker_id,
            "alive": h.alive,
            "last_seen_ms_ago": h.last_seen_ms_ago,
            "messages": [vars(m) for m in h.messages],
        }
        for h in holds
        if h.alive or h.messages  # producers (listener, web) also appear in the broker's heartbeats
    ]
    return json_response({"success": True, "data": data})


@bp.post("/recover")
def recover() -> Response:
    res = resources()
    if not is_redis_broker(res.broker):
        raise ApiError(501, "not_implemented", "RabbitMQ gives a dead consumer's messages back itself")
    result = recover_stranded(res.broker_redis, timeout=res.settings.worker_heartbeat_timeout).to_dict()
    log.warning("admin: recover moved back %s", result)
    return json_response({"success": True, "data": result})


@bp.get("/rollout")
def get_rollout() -> Response:
    settings = resources().settings
    with read_connection(_admin_pool()) as conn:
        stored = read_rollout(conn, settings.rollout_start_new_percent)
        accounts = tracked_addresses(conn)
    return json_response({"success": True, "data": _rollout_view(stored, accounts)})


@bp.put("/rollout")
def put_rollout() -> Response:
    body = request.get_json(silent=True)
    if (
        not isinstance(body, dict)
        or not body
        or set(body) - {"new_percent", "shadow_percent"}
        or any(value is None for value in body.values())  # null would read as "unchanged"
    ):
        raise bad_request(
            'the body must be a JSON object with "new_percent" (0-100: the share of accounts the new path answers;'
            ' 0 = rollback) and/or "shadow_percent" (0-100)'
        )
    settings = resources().settings
    try:
        with read_connection(_admin_pool()) as conn:
            stored = write_rollout(
                conn,
                start_new_percent=settings.rollout_start_new_percent,
                new=body.get("new_percent"),
                shadow=body.get("shadow_percent"),
                by="admin API",
            )
            accounts = tracked_addresses(conn)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    log.warning("admin: rollout set to %s", stored)
    current_paths().rollout = stored  # this process at once; the others at their next refresh
    return json_response({"success": True, "data": _rollout_view(stored, accounts)})


def _rollout_view(stored: Rollout, accounts: frozenset[str]) -> dict[str, Any]:
    paths = current_paths()
    new, legacy = split_accounts(accounts, stored.new_percent)
    return {
        **stored.to_json(),
        "accounts": {"new": new, "legacy": legacy},
        "legacy_path": paths.node is not None,
        "refresh_seconds": paths.settings.rollout_refresh_seconds,
        "this_process": paths.rollout.to_json(),
    }


def _bulk_actor() -> str | None:
    """The actor a bulk requeue or purge is limited to; None (every dead letter) only with all=true.

    An empty `actor=` must not widen an action to every message: a form or script that lost its
    value would otherwise purge them all.
    """
    actor = request.args.get("actor")
    everything = request.args.get("all")
    if everything not in (None, "true", "false"):
        raise bad_request(f"all must be true or false (got {shown(everything)})")
    if actor is not None and everything == "true":
        raise bad_request("give either actor or all=true, not both")
    if actor is None or not actor.strip():
        if everything != "true":
            raise bad_request("name the dead letters: actor=<actor name>, or all=true for every one")
        return None
    return actor


def _id(raw: str) -> int:
    # Length before int(): past 4,300 digits int() raises instead of answering.
    if not (raw.isdigit() and raw.isascii() and len(raw) <= 19 and 1 <= int(raw) <= INT64_MAX):
        raise bad_request(f"dead letter id must be a positive integer (got {shown(raw)})")
    return int(raw)


webhook_routes(bp, _admin_pool)
