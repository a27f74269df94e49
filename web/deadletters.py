"""GET /api/dead-letters: how many worker messages ended dead, per actor and reason. Counts only.

The messages themselves (arguments, errors, tracebacks) are under the admin API (web/admin.py),
behind ADMIN_TOKEN: they hold account addresses and amounts, and error text can name hosts.
"""

from __future__ import annotations

from flask import Blueprint, Response

from ledger.coordination.inflight import is_redis_broker
from ledger.store.deadletters import broker_dead_letter_count, dead_letter_counts
from web.pg import read_connection
from web.resources import resources
from web.responses import json_response

bp = Blueprint("deadletters", __name__)


@bp.get("/api/dead-letters")
def dead_letters() -> Response:
    res = resources()
    with read_connection(res.pool) as conn:
        counts = dead_letter_counts(conn)
    if is_redis_broker(res.broker):
        counts["in_broker"] = broker_dead_letter_count(res.broker_redis, res.settings.queue_name)
    return json_response({"success": True, "data": counts})
