"""The node client's default path (urllib3, ledger/chain/transport.py) against a real HTTP server:
every way a node answers or fails ends as the same exceptions as through an httpx transport; and
through a forwarding proxy in front of the simulator, as the proxy variables say."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest

from harness.procs import ROOT, Proc
from harness.servers import free_port
from harness.stack import start_simulator
from ledger.chain.node import NodeUnavailable, RouteMissing, TronNode, block_number
from ledger.chain.values import NodeError

KEY = "5e0c1d2a-0b1d-4e11-9a8b-secretkey111"
# The forms a node or proxy may echo the key in: JSON-escaped (all or some characters), URL-encoded.
ESCAPED_KEY = "".join(f"\\u{ord(c):04X}" for c in KEY)
HALF_ESCAPED_KEY = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(KEY))
URL_KEY = "".join(f"%{ord(c):02X}" for c in KEY)
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

            do_GET = do_POST = do_CONNECT = _serve  # noqa: N815 - names fixed by BaseHTTPRequestHandler

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


def _client(url: str, **kwargs: object) -> TronNode:
    kwargs.setdefault("proxies", {})  # direct unless a test says otherwise, whatever the runner's environment
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
        ((200, f'{{"echo": "{ESCAPED_KEY}", "cut'.encode()), NodeUnavailable, "malformed JSON"),
        ((200, f'{{"echo": "{HALF_ESCAPED_KEY}" "cut'.encode()), NodeUnavailable, "malformed JSON"),
        ((200, f'{{"Error": "bad key {ESCAPED_KEY}"}}'.encode()), NodeError, "bad key"),
        ((502, f"GET /?key={URL_KEY}".encode()), NodeUnavailable, "HTTP 502"),
        ((429, f"key={URL_KEY.lower()} suspended for 1 s".encode()), NodeUnavailable, "rate limited"),
    ],
)
def test_each_bad_answer_is_one_of_the_clients_exceptions_without_the_key(
    node: _Node, reply: Reply, raises: type[Exception], match: str
) -> None:
    node.answer = lambda handler, body: reply
    client = _client(node.url)
    with pytest.raises(raises, match=match) as caught:
        client.transaction_infos(1)
    for form in (KEY, ESCAPED_KEY, HALF_ESCAPED_KEY, URL_KEY, URL_KEY.lower()):
        assert form.lower() not in str(caught.value).lower()
    if reply[0] == 429 and b"3 s" in reply[1]:
        assert isinstance(caught.value, NodeUnavailable) and caught.value.retry_after == 3.0
    client.close()


def test_a_node_that_is_not_there_is_unavailable() -> None:
    client = _client(f"http://127.0.0.1:{free_port()}")  # a port nothing listens on
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


# -- proxies ---------------------------------------------------------------------------------------


def _forward(handler: BaseHTTPRequestHandler, body: bytes) -> Reply:
    """A forwarding proxy's answer: an absolute-URI request sent on to its host. A CONNECT is
    refused (no tunnel: the tests only look at what asked for it)."""
    if handler.command == "CONNECT":
        return 403, b""
    target = urlsplit(handler.path)
    hop_by_hop = {"connection", "keep-alive", "proxy-connection", "proxy-authorization"}
    headers = {name: value for name, value in handler.headers.items() if name.lower() not in hop_by_hop}
    upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
    try:
        upstream.request(handler.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        reply = upstream.getresponse()
        return reply.status, reply.read()
    finally:
        upstream.close()


@pytest.fixture
def proxy() -> Iterator[_Node]:
    server = _Node()
    server.answer = _forward
    yield server
    server.close()


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    proc, url = start_simulator("--history-blocks", "30", "--paused")  # solid = head - 19
    yield url
    Proc.stop(proc)


def _height(simulator: str, which: str = "head") -> int:
    number: int = httpx.get(f"{simulator}/sim/status").json()[which]
    return number


def _port(url: str) -> int:
    return urlsplit(url).port or 0


def test_with_http_proxy_set_requests_reach_the_node_through_the_proxy(simulator: str, proxy: _Node) -> None:
    client = _client(simulator, proxies={"http": proxy.url})
    assert block_number(client.head_header()) == _height(simulator)
    assert block_number(client.head_header()) == _height(simulator)
    assert [(method, path) for method, path, *_ in proxy.seen] == [("POST", f"{simulator}/wallet/getblock")] * 2
    assert all(headers["TRON-PRO-API-KEY"] == KEY for _, _, headers, _ in proxy.seen)
    client.close()


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost, 127.0.0.1:{port}", "*"])
def test_no_proxy_naming_the_host_goes_direct(simulator: str, proxy: _Node, no_proxy: str) -> None:
    proxies = {"http": proxy.url, "no": no_proxy.format(port=_port(simulator))}
    client = _client(simulator, proxies=proxies)
    assert block_number(client.head_header()) == _height(simulator)
    assert proxy.seen == []
    client.close()


@pytest.mark.parametrize("schemes", [[], ["https"]], ids=["none", "https-only"])
def test_without_a_proxy_for_the_scheme_requests_go_direct(simulator: str, proxy: _Node, schemes: list[str]) -> None:
    client = _client(simulator, proxies={scheme: proxy.url for scheme in schemes})
    assert block_number(client.head_header()) == _height(simulator)
    assert proxy.seen == []
    client.close()


def test_node_and_solidity_urls_are_decided_apart_and_logged_once_without_credentials(
    simulator: str, proxy: _Node, caplog: pytest.LogCaptureFixture
) -> None:
    port = _port(simulator)
    local = f"http://localhost:{port}"  # the same simulator by another name, which NO_PROXY lists
    proxy_url = proxy.url.replace("http://", "http://ops:s%40cret@")
    with caplog.at_level(logging.INFO, logger="ledger.chain.transport"):
        client = _client(simulator, solidity_url=local, proxies={"http": proxy_url, "no": "localhost"})
    assert client.solid_block_number() == _height(simulator, "solid")
    assert block_number(client.head_header()) == _height(simulator)
    assert [path for _, path, *_ in proxy.seen] == [f"{simulator}/wallet/getblock"]
    headers = {name.lower(): value for name, value in proxy.seen[0][2].items()}
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"ops:s@cret").decode()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f"node requests: {simulator} through proxy {proxy.url}; {local} direct"]
    client.close()


def test_an_https_node_is_asked_for_through_a_connect_tunnel_without_the_key(proxy: _Node) -> None:
    client = _client("https://trongrid.test", proxies={"https": proxy.url})
    with pytest.raises(NodeUnavailable, match="getblock"):
        client.head_header()
    [(method, target, headers, _)] = proxy.seen
    assert (method, target) == ("CONNECT", "trongrid.test:443")
    assert KEY not in str(headers)
    client.close()


@pytest.mark.parametrize(
    ("variables", "through"),
    [({"HTTP_PROXY": "{proxy}"}, True), ({"http_proxy": "{proxy}", "NO_PROXY": "127.0.0.1"}, False), ({}, False)],
    ids=["HTTP_PROXY", "NO_PROXY", "none"],
)
def test_the_proxy_variables_of_the_environment_are_the_default(
    simulator: str, proxy: _Node, variables: Mapping[str, str], through: bool
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
    env |= {name: value.format(proxy=proxy.url) for name, value in variables.items()}
    code = (
        "import sys; from ledger.chain.node import TronNode, block_number;"
        "print(block_number(TronNode(sys.argv[1]).head_header()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, simulator], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == _height(simulator)
    assert len(proxy.seen) == (1 if through else 0)
