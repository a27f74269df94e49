"""GET /api/dead-letters and /api/dead-letters/<id>: worker messages that failed for good."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ledger.deadletters import get_dead_letter, list_dead_letters
from ledger.domain import INT64_MAX
from web.params import int_param
from web.pg import read_connection
from web.resources import resources
from web.responses import bad_request, json_response, not_found, shown

bp = Blueprint("deadletters", __name__)

_MAX_LIMIT = 200


@bp.get("/api/dead-letters")
def dead_letters() -> Response:
    limit = int_param(request.args, "limit", 50, 1, _MAX_LIMIT)
    before_id = int_param(request.args, "before_id", 0, 1, INT64_MAX) or None
    with read_connection(resources().pool) as conn:
        rows = list_dead_letters(conn, limit=limit + 1, before_id=before_id)  # one extra: is there more?
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"limit": limit, "next_before_id": rows[-1]["id"] if more else None}
    return json_response({"success": True, "data": rows, "meta": meta})


@bp.get("/api/dead-letters/<dl_id>")
def dead_letter(dl_id: str) -> Response:
    # Length before int(): past 4,300 digits int() raises instead of answering.
    if not (dl_id.isdigit() and dl_id.isascii() and len(dl_id) <= 19 and 1 <= int(dl_id) <= INT64_MAX):
        raise bad_request(f"dead letter id must be a positive integer (got {shown(dl_id)})")
    with read_connection(resources().pool) as conn:
        row = get_dead_letter(conn, int(dl_id))
    if row is None:
        raise not_found(f"no dead letter {dl_id}")
    return json_response({"success": True, "data": row})
