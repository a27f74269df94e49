"""What every request passes before its view, and every response gets on its way out.

Before the view:
- a body over MAX_BODY_BYTES is refused with 413 before anything reads it (the API's only bodies
  are small JSON objects), and a chunked one (no length announced) with 411: under granian the
  WSGI input of a chunked body reads as empty to Werkzeug, so it would be taken for a missing body;
- a NUL character in a query parameter is a 400: PostgreSQL text cannot hold one, so it would
  otherwise surface as a database error (path segments are parsed by their views, which refuse it);
- with READ_TOKEN set, every /api and /compat route needs `Authorization: Bearer <READ_TOKEN>`
  (ADMIN_TOKEN is accepted too: whoever may change state may read it); with METRICS_TOKEN set,
  /metrics and /health/tron-data-health need that one. /health/live and /health/ready stay open
  for a load balancer's probes (they show no account data). Tokens are compared in constant time
  (`hmac.compare_digest`).

After the view: `X-Content-Type-Options: nosniff` and `X-Frame-Options: DENY` on every response,
and a Content-Security-Policy: `default-src 'none'` for data, and for the HTML status page one that
allows its own inline script by hash (computed from the page, so no other script can run), its
styles and requests to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable

from flask import Flask, Response, request

from web.resources import resources
from web.responses import ApiError

# The largest body accepted; PUT /admin/rollout, the largest, is under 100 bytes.
MAX_BODY_BYTES = 64 * 1024

READ_PREFIXES = ("/api/", "/compat/")
MONITORING_PREFIXES = ("/metrics", "/health/tron-data-health")

_DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_NONE = "'none'"
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def install(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # `//x` would be redirected to `/x` with an absolute URL built from the Host header (a redirect
    # to any host a client names); and `/x/` to `/x` likewise. Neither is an API route: 404.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.before_request(_check_request)
    app.after_request(_secure_headers)


def _check_request() -> None:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the request body may be at most {MAX_BODY_BYTES} bytes")
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise ApiError(411, "length_required", "send the body with a Content-Length (chunked bodies are not read)")
    query = request.query_string
    # A decoded NUL can only come from `%00` or a raw NUL: without either, the parameters are not
    # parsed here (that is most of a cached read's own cost; the views parse them when they need them).
    if b"%00" in query or b"\x00" in query:
        for name, value in request.args.items(multi=True):
            if "\x00" in name or "\x00" in value:
                raise ApiError(400, "bad_request", f"query parameter {_name(name)} contains a NUL character")
    settings = resources().settings
    path = request.path
    if settings.read_token and path.startswith(READ_PREFIXES):
        _require_bearer((settings.read_token, settings.admin_token), "READ_TOKEN")
    elif settings.metrics_token and path.startswith(MONITORING_PREFIXES):
        _require_bearer((settings.metrics_token,), "METRICS_TOKEN")


def _require_bearer(tokens: Iterable[str], name: str) -> None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    presented = given.strip().encode()
    # Every token is compared, whichever matches: the time taken says nothing about which one did.
    matched = False
    for token in tokens:
        if token:
            matched |= hmac.compare_digest(presented, token.encode())
    if not (scheme.lower() == "bearer" and matched):
        raise ApiError(401, "unauthorized", f"this route needs 'Authorization: Bearer <{name}>'")


def _secure_headers(response: Response) -> Response:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    if response.mimetype == "text/html" and not response.is_streamed:
        headers["Content-Security-Policy"] = page_policy(response.get_data())
    else:
        headers.setdefault("Content-Security-Policy", _DATA_POLICY)
    if response.status_code == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = 'Bearer realm="ledger"'
    return response


def page_policy(html: bytes) -> str:
    """The policy of an HTML page of this service: its inline scripts (by hash) and nothing else."""
    sources = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'" for script in _SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src {sources or _NONE}; style-src 'unsafe-inline'; connect-src 'self';"
        " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _name(name: str) -> str:
    return repr(name.replace("\x00", "\\x00")[:32])
