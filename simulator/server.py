"""HTTP transport: a ThreadingHTTPServer speaking HTTP/1.1 with keep-alive.

Every response goes through exactly one place, `SimHandler._serve`, which asks the apps for a
response and passes it through the server's `ResponseFilter` (the fault-injection seam) before
writing it. The one exception is GET /ws, upgraded to a WebSocket and handed to the block feed
(faults are a property of the node's HTTP API, not of the feed).

Status line, headers and body go out in one write with TCP_NODELAY: two small writes on a
keep-alive connection would otherwise meet Nagle plus delayed ACK and stall ~40 ms each.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from . import websocket
from .faults import PassThrough, ResponseFilter
from .httpio import Request, Response

if TYPE_CHECKING:
    from .feed import BlockFeed
    from .requests import RequestCounter

App = Callable[[Request], "Response | None"]
MAX_BODY = 4 * 1024 * 1024  # java-tron rejects oversized bodies too (HTTP 413)
WS_PATH = "/ws"


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # benchmarks open many connections at once

    def __init__(
        self,
        address: tuple[str, int],
        apps: Sequence[App],
        response_filter: ResponseFilter | None = None,
        log_requests: bool = False,
        feed: BlockFeed | None = None,
        counter: RequestCounter | None = None,
    ) -> None:
        super().__init__(address, SimHandler)
        self.counter = counter
        self.apps = list(apps)
        self.response_filter: ResponseFilter = response_filter or PassThrough()
        self.log_requests = log_requests
        self.feed = feed

    def dispatch(self, request: Request) -> Response:
        for app in self.apps:
            response = app(request)
            if response is not None:
                return response
        return Response(404, b"Not Found", "text/plain")


class SimHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; requires an exact Content-Length on every reply
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == WS_PATH and self.server.feed is not None:
            self._websocket(self.server.feed)
        else:
            self._serve()

    def _websocket(self, feed: BlockFeed) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        problem = websocket.handshake_problem(self.command, headers)
        if problem is not None:
            # 426 tells a plain HTTP client what this path wants (RFC 6455 section 4.2.2).
            upgrade = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            self._write(Response(426, problem.encode(), "text/plain", headers=upgrade, close=True))
            return
        self.close_connection = True  # after the feed is done the socket is not HTTP any more
        if self.server.log_requests:
            self.log_request(101, 0)
        feed.serve(self.connection, self.rfile, websocket.handshake_reply(headers["sec-websocket-key"]))

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._write(Response(413 if length > MAX_BODY else 400, b"Bad Request", "text/plain", close=True))
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        request = Request(
            method=self.command,
            path=parts.path,
            query=query,
            body=body,
            headers={key.lower(): value for key, value in self.headers.items()},
        )
        if self.server.counter is not None:
            self.server.counter.record(request, str(self.client_address[0]))
        try:
            response = self.server.dispatch(request)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection thread silently
            print(f"simulator: error serving {self.path}: {exc!r}", file=sys.stderr, flush=True)
            response = Response(500, b"Internal Server Error", "text/plain")
        self._write(self.server.response_filter(request, response))

    def _write(self, response: Response) -> None:
        if response.delay_seconds > 0:
            time.sleep(response.delay_seconds)
        if response.drop:
            self.close_connection = True
            return
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines += [f"{key}: {value}" for key, value in response.headers.items()]
        if response.close:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + response.body)
        except OSError:  # the client gave up (a delayed "timeout" fault, say): not our error
            self.close_connection = True
            return
        if self.server.log_requests:
            self.log_request(response.status, len(response.body))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class signature
        if self.server.log_requests:
            super().log_message(format, *args)
