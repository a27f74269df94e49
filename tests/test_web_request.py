"""The app's request class: a query parameter that is absent costs a dict lookup, not an exception."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request
from werkzeug import exceptions

from web.request import LedgerRequest


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
