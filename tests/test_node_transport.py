"""The node client's default path (urllib3, ledger/node_transport.py) against a real HTTP server:
every way a node answers or fails ends as the same exceptions as through an httpx transport."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ledger.tron_json import NodeError
from ledger.tron_node import NodeUnavailable, RouteMissing, TronNode

KEY = "5e0c1d2a-0b1d-4e11-9a8b-secretkey111"
Reply = tuple[int, bytes]


class _Node:
    """A local HTTP server whose answer each test sets; it records what it was asked."""

    def __init__(self) -> None:
        self.answer: Callable[[BaseHTTPRequestHandler, bytes], Reply] = lambda handler, body: (200, b"{}")
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.ports: list[int] = []  # the client's port of each request: one = one connection
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a node

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                node.seen.append((self.command, self.path, dict(self.headers), body))
                node.ports.append(self.client_address[1])
                status, payload = node.answer(self, body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def node() -> Iterator[_Node]:
    server = _Node()
    yield server
    server.close()


def _client(url: str, **kwargs: float) -> TronNode:
    return TronNode(url, api_key=KEY, retries=0, **kwargs)  # type: ignore[arg-type]


def test_a_read_sends_the_json_body_and_key_over_one_kept_alive_connection(node: _Node) -> None:
    node.answer = lambda handler, body: (200, b'[{"id": "ab"}]')
    client = _client(node.url)
    assert client.transaction_infos(7) == [{"id": "ab"}]
    assert client.transaction_infos(8) == [{"id": "ab"}]
    for method, path, headers, _ in node.seen:
        assert (method, path) == ("POST", "/wallet/gettransactioninfobyblocknum")
        assert headers["TRON-PRO-API-KEY"] == KEY and headers["Content-Type"] == "application/json"
    assert [body for *_, body in node.seen] == [b'{"num":7}', b'{"num":8}']
    assert len(set(node.ports)) == 1
    client.close()


def test_a_v1_route_is_a_get_with_its_parameters_in_the_query(node: _Node) -> None:
    node.answer = lambda handler, body: (200, b'{"data": [], "success": true}')
    client = _client(node.url)
    assert client.account_transactions("TXYZ", {"limit": "200", "fingerprint": "a b"})["data"] == []
    method, path, _, body = node.seen[0]
    assert method == "GET" and path == "/v1/accounts/TXYZ/transactions?limit=200&fingerprint=a+b" and body == b""
    client.close()


@pytest.mark.parametrize(
    ("reply", "raises", "match"),
    [
        ((429, b'{"Error":"suspended for 3 s"}'), NodeUnavailable, "rate limited"),
        ((503, b"<html>busy</html>"), NodeUnavailable, "HTTP 503"),
        ((404, b"not found"), RouteMissing, "HTTP 404"),
        ((200, b"not json"), NodeUnavailable, "malformed JSON"),
        ((200, b'{"Error": "class java.lang.NullPointerException : null"}'), NodeError, "NullPointer"),
        ((502, f"upstream echoed {KEY}".encode()), NodeUnavailable, "HTTP 502"),
    ],
)
def test_each_bad_answer_is_one_of_the_clients_exceptions_without_the_key(
    node: _Node, reply: Reply, raises: type[Exception], match: str
) -> None:
    node.answer = lambda handler, body: reply
    client = _client(node.url)
    with pytest.raises(raises, match=match) as caught:
        client.transaction_infos(1)
    assert KEY not in str(caught.value)
    if reply[0] == 429:
        assert isinstance(caught.value, NodeUnavailable) and caught.value.retry_after == 3.0
    client.close()


def test_a_node_that_is_not_there_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}")
    with pytest.raises(NodeUnavailable, match="transaction"):
        client.transaction_infos(1)
    client.close()


def test_a_node_that_does_not_answer_in_time_is_unavailable(node: _Node) -> None:
    def slow(handler: BaseHTTPRequestHandler, body: bytes) -> Reply:
        time.sleep(1.0)
        return 200, b"[]"

    node.answer = slow
    client = _client(node.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="timed out"):
        client.transaction_infos(1)
    assert time.monotonic() - started < 0.9
    client.close()


def test_a_connection_the_node_closed_is_unavailable_then_the_next_request_reconnects(node: _Node) -> None:
    def hang_up(handler: BaseHTTPRequestHandler, body: bytes) -> Reply:
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
        return 200, b""

    client = _client(node.url)
    node.answer = hang_up
    with pytest.raises(NodeUnavailable):
        client.transaction_infos(1)
    node.answer = lambda handler, body: (200, b"[]")
    assert client.transaction_infos(2) == []
    client.close()
