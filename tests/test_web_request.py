"""The app's request class: a query parameter that is absent costs a dict lookup, not an exception."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug import exceptions

from web.request import LedgerRequest
from web.responses import send_whole


def test_an_absent_parameter_builds_no_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    original = exceptions.BadRequestKeyError.__init__

    def counting(self: exceptions.BadRequestKeyError, *args: Any, **kwargs: Any) -> None:
        built.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(exceptions.BadRequestKeyError, "__init__", counting)
    app = Flask(__name__)
    app.request_class = LedgerRequest  # as web.app.create_app sets it
    with app.test_request_context("/api/stake/records?pool_account_id=1&limit=20&limit=30"):
        args = request.args
        assert args.get("cursor") is None and args.get("page", "1") == "1"
        assert args.get("limit") == "20" and args.getlist("limit") == ["20", "30"]  # a MultiDict's answers
        assert args.get("limit", type=int) == 20 and args.get("pool_account_id", type=int) == 1
        assert "cursor" not in args
    assert not [key for key in built if key and key[0] in ("cursor", "page")]


def test_a_body_held_whole_reaches_the_server_as_a_list_and_a_stream_as_an_iterator() -> None:
    app = Flask(__name__)
    app.after_request(send_whole)  # as web.app.create_app installs it
    closed: list[bool] = []

    @app.get("/whole")
    def whole() -> Response:
        return Response(b'{"success":true}', mimetype="application/json")

    @app.get("/stream")
    def stream() -> Response:
        return Response((part for part in (b"a", b"b")), mimetype="text/event-stream")

    @app.get("/on-close")
    def on_close() -> Response:
        response = Response(b"x")
        response.call_on_close(lambda: closed.append(True))
        return response

    def call(path: str, method: str = "GET") -> Iterable[bytes]:
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}  # fmt: skip
        return app(environ, lambda status, headers, exc_info=None: lambda data: None)

    body = call("/whole")
    assert type(body) is list and body == [b'{"success":true}']  # granian's one-piece path
    assert list(call("/whole", "HEAD")) == []
    streamed = call("/stream")
    assert type(streamed) is not list and b"".join(streamed) == b"ab"
    kept: Any = call("/on-close")
    assert type(kept) is not list
    kept.close()
    assert closed == [True]  # what is registered to run on close still runs
