"""GET /bench/constant: the benchmark's ceiling.

A fixed small JSON body through the same server, Flask and process settings as the real routes,
with no I/O: what a cached page is measured against (bench/api.py). Registered only when
`BENCH_ROUTES=1`, so a production app has no route that is not the product's.
"""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("bench", __name__)

_BODY = b'{"success":true,"data":{"constant":true}}'


@bp.get("/bench/constant")
def constant() -> Response:
    return Response(_BODY, mimetype="application/json")
