"""JSON out of the API: orjson encoding, the error type and shape, and Flask's JSON provider.

Every body is `{"success": true, ...}` or `{"success": false, "error": {"code", "message"}}`.
Amounts are JSON integers, exact: orjson writes 64-bit integers as they are, and anything larger
(a sum) falls back to the stdlib encoder, which writes any Python int exactly.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider

# UTC datetimes end in "Z"; the web pool's sessions run in UTC (web.app), so every timestamp does.
_ORJSON_OPTIONS = orjson.OPT_UTC_Z


class ApiError(Exception):
    """A client-facing error; the handler in web.errors turns it into the JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# An error names what was wrong and shows the start of what was given, never all of it: a 10-kB
# parameter must not come back in the body (or the logs) whole.
ECHO_LIMIT = 64


def shown(value: str) -> str:
    """`value` as an error message shows it: its repr, cut to ECHO_LIMIT characters + '…'."""
    text = repr(value)
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; only an aggregate could get there.
        return json.dumps(obj, default=_stdlib_default, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status=status, mimetype="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response({"success": False, "error": {"code": code, "message": message}}, status)


def _stdlib_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class OrjsonProvider(JSONProvider):
    """`app.json`: orjson, keys in insertion order (Flask's default provider sorts them)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return json_response(obj)


def send_whole(response: Response) -> Response:
    """After-request hook: a body held whole in memory goes to the server as the one-item list it is.

    Werkzeug otherwise hands the server a generator over it (`iter_encoded`, in a ClosingIterator),
    and granian sends any iterator through its chunk-by-chunk path; a list it sends in one piece
    (its `response_bytes`), about 10 us of server CPU a request less. Only a body made from bytes
    (`set_data`), with nothing registered to run on close: a streamed body (the event stream) keeps
    Werkzeug's iterator. HEAD and bodiless statuses are still answered without one (`get_app_iter`).
    """
    body = response.response
    if type(body) is list and len(body) == 1 and type(body[0]) is bytes and not response._on_close:
        response.direct_passthrough = True
    return response
