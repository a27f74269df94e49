"""Transport-neutral request and response values passed between the HTTP server and the APIs.

Keeping them plain data is what lets a fault layer (simulator.faults) rewrite any response in
one place: delay it, drop the connection, change the status or truncate the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .render import dumps

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # last value wins, as with a servlet's getParameter for a single value
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0  # for fault injection: answer late (client timeouts)
    drop: bool = False  # for fault injection: close the connection without answering
    close: bool = False  # send "Connection: close" and close after answering


def json_response(obj: object, status: int = 200) -> Response:
    return Response(status, dumps(obj))


def raw_json(body: bytes, status: int = 200) -> Response:
    return Response(status, body)
