"""The request class of the app: query parameters that are cheap to look up when absent.

werkzeug's MultiDict answers `get(name)` for an absent name by raising (and catching) a
BadRequestKeyError, an HTTPException whose construction is most of the lookup's cost. The
records view asks for `cursor`, `page` and the account's other forms on every read, and most of
them are absent, so on a cached page (a local hit costs no I/O at all) these misses were the
largest piece of per-request work the constant route does not do.
"""

from __future__ import annotations

from typing import Any

from flask import Request
from werkzeug.datastructures import ImmutableMultiDict


class QueryArgs(ImmutableMultiDict[str, str]):
    # One signature for werkzeug's five overloads: the behaviour is theirs, a miss is just cheaper.
    def get(self, key: str, default: Any = None, type: Any = None) -> Any:  # type: ignore[override]  # noqa: A002
        if key not in self:
            return default
        return super().get(key, default, type)


class LedgerRequest(Request):
    parameter_storage_class = QueryArgs
