"""The web server as the Procfile runs it keeps answering while many clients hold keep-alive connections.

granian's `--backpressure` is a permit per open *connection*, not per request in progress (granian
2.8.7, measured): with the old `--backpressure 4` and 2 workers, eight idle keep-alive connections
(a browser, a proxy's pool) left every other client unanswered. The Procfile's value must leave
room for many more connections than request threads, and a connection that sends nothing must not
keep its permit: `--http 1` with `--http1-header-read-timeout` closes it (granian's default HTTP
mode, `auto`, waits for a connection's first bytes with no timeout at all, so every connection past
`workers x backpressure` silent ones waited for good).
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from harness.procs import Proc
from harness.servers import free_port
from harness.stack import procfile_web_flag, start_web

IDLE_CONNECTIONS = 24


def test_procfile_backpressure_leaves_room_for_many_connections() -> None:
    # workers x backpressure is how many connections one host serves at once.
    assert 2 * int(procfile_web_flag("--backpressure")) >= 64


@pytest.mark.slow
def test_answers_while_idle_keep_alive_connections_are_open(env: dict[str, str], procs: list[Proc]) -> None:
    port = free_port()
    procs.append(start_web(env, port))
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")  # answered, and now idle, kept alive
            idle.append(conn)
        answer = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
        assert answer.status_code == 200
    finally:
        for conn in idle:
            conn.close()


@pytest.mark.slow  # the header timeout, waited out, and a web start
def test_silent_connections_lose_their_permits(env: dict[str, str], procs: list[Proc]) -> None:
    port = free_port()
    procs.append(start_web(env, port))
    permits = 2 * int(procfile_web_flag("--backpressure"))
    header_timeout = int(procfile_web_flag("--http1-header-read-timeout")) / 1000
    assert header_timeout <= 5  # "a few seconds"
    url = f"http://127.0.0.1:{port}/health/live"
    # More connections than permits, none of which ever sends a byte (a port scanner, a slowloris,
    # clients gone quiet behind a broken NAT); held open on this side throughout.
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(permits + 44)]
    try:
        # A client arriving now waits for permits to free up: at most the header timeout.
        began = time.monotonic()
        assert httpx.get(url, timeout=header_timeout + 5).status_code == 200
        assert time.monotonic() - began < header_timeout + 1.0
        # Once the silent ones have lost their permits, clients are answered at once.
        time.sleep(max(0.0, began + header_timeout + 0.5 - time.monotonic()))
        for _ in range(5):
            began = time.monotonic()
            assert httpx.get(url, timeout=5).status_code == 200
            assert time.monotonic() - began < 1.0
    finally:
        for conn in silent:
            conn.close()


def test_a_port_in_use_is_refused_not_shared(env: dict[str, str]) -> None:
    # granian binds with SO_REUSEPORT and would share the port with its holder without a word.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            start_web(env, port)
