"""A real local HTTP receiver of webhooks, for the tests and the webhook benchmark.

It records every request it read (headers and body) and what it did with it: answered 2xx
("accepted"), answered 500 ("refused"), or read it and dropped the connection without an answer
("lost": the ledger cannot know the receiver processed it, so it must send it again). It can be
taken down (its port closed: connections are refused) and brought back up on the same port.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCEPTED, REFUSED, LOST = "accepted", "refused", "lost"


@dataclass(frozen=True)
class Receipt:
    path: str
    headers: dict[str, str]
    body: bytes
    outcome: str


@dataclass
class Behaviour:
    error_rate: float = 0.0  # share of requests answered 500
    lose_rate: float = 0.0  # share of requests read, then dropped without an answer
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class Receiver:
    def __init__(self, behaviour: Behaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self.receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outcome = receiver._decide()
                with receiver._lock:
                    receiver.receipts.append(Receipt(self.path, dict(self.headers.items()), body, outcome))
                if outcome == LOST:
                    self.close_connection = True
                    self.connection.close()
                    return
                status = 200 if outcome == ACCEPTED else 500
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                return

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Down: the port closed, so connections are refused until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _decide(self) -> str:
        with self._lock:
            draw = self.behaviour.rng.random()
        if draw < self.behaviour.lose_rate:
            return LOST
        if draw < self.behaviour.lose_rate + self.behaviour.error_rate:
            return REFUSED
        return ACCEPTED

    def snapshot(self) -> list[Receipt]:
        with self._lock:
            return list(self.receipts)
