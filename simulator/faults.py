"""The fault-injection seam: every response passes through one `ResponseFilter` before it is sent.

Today only `PassThrough` exists. Planned filters (rate limiting 429/403 "suspended for N s",
5xx, HTTP 200 {"Error"}, timeouts via `Response.delay_seconds`, dropped connections via
`Response.drop`, truncated JSON, `{}` for an existing block, head moving backwards) plug in here
without touching the APIs or the server.
"""

from __future__ import annotations

from typing import Protocol

from .httpio import Request, Response


class ResponseFilter(Protocol):
    def __call__(self, request: Request, response: Response) -> Response: ...


class PassThrough:
    """No faults: the response goes out as the API produced it."""

    def __call__(self, request: Request, response: Response) -> Response:
        return response
