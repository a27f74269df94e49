"""JSON error handlers: every failure, routing ones included, answers in the API's error shape."""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, Response, request
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from web.responses import ApiError, error_response, shown

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(psycopg.OperationalError, _database_unavailable)
    app.register_error_handler(Exception, _internal_error)


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    if isinstance(exc, NotFound):
        message = f"{shown(request.path)} is not an endpoint of this API"
    else:
        message = exc.description or exc.name or "error"
    response = error_response(status, code, message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _database_unavailable(exc: Exception) -> Response:
    # Connection loss or an exhausted pool: a retry may work, so 503 rather than 500.
    log.warning("database unavailable on %s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
    response = error_response(503, "unavailable", "the database is unavailable; try again shortly")
    response.headers["Retry-After"] = "1"
    return response


def _internal_error(exc: Exception) -> Response:
    # The log gets the traceback; the client gets nothing that could hold a secret.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal server error")
