"""Limits of the live web server (granian, as the Procfile runs it) against hostile requests on raw sockets:
a body far over the limit is refused without being held, `//` with a foreign Host is never
redirected there, and granian's own limit on the request line answers as docs/DEPLOYMENT.md says."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from harness.cdp import Browser, chromium
from harness.procs import Proc
from harness.servers import free_port
from harness.stack import settings_env, start_web
from tests.conftest import settings_for

TOKEN = "limits-admin-token-0123456789"
READ = "limits-read-token-0123456789"


@pytest.fixture(scope="module")
def web(database_url: str) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    proc = start_web({**settings_env(settings_for(database_url)), "ADMIN_TOKEN": TOKEN}, port)
    yield proc, port
    proc.stop()


def exchange(port: int, head: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send a request (its body chunk by chunk, stopping when the server closes) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks or iter(()):
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed: what a refused body looks like
        answer = b""
        try:
            while len(answer) < 65536:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    return answer


def rss_mb(proc: Proc) -> int:
    """Resident memory of the server and its worker processes."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--pid", str(proc.popen.pid), "--ppid", str(proc.popen.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(kb) for kb in out.split()) // 1024


def test_a_huge_body_is_413_and_not_kept_in_memory(web: tuple[Proc, int]) -> None:
    proc, port = web
    before = rss_mb(proc)
    size = 100 * 1024 * 1024
    chunk = b"x" * (1 << 20)
    for _ in range(2):  # both worker processes, whichever takes the connection
        answer = exchange(
            port,
            b"PUT /admin/rollout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n".encode(),
            (chunk for _ in range(size // len(chunk))),
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"success":false' in answer
    # Chunked, with no length announced: refused unread.
    chunks = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(100))
    answer = exchange(
        port,
        b"PUT /admin/rollout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
        chunks,
    )
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert rss_mb(proc) - before < 30, (before, rss_mb(proc))


def test_double_slash_with_a_foreign_host_is_not_redirected_there(web: tuple[Proc, int]) -> None:
    _, port = web
    for path in (b"//api/monitor", b"//evil.example/api/monitor", b"/api//monitor", b"//health//live"):
        answer = exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert b"evil.example" not in head, head
        assert not head.startswith((b"http/1.1 30", b"http/1.1 308")), head


def test_granian_refuses_an_overlong_request_line_as_documented(web: tuple[Proc, int]) -> None:
    """granian answers it itself, before the app, with an empty body (docs/DEPLOYMENT.md)."""
    _, port = web
    answer = exchange(
        port, b"GET /api/monitor?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 414"), answer[:200]
    assert answer.endswith(b"\r\n\r\n")  # no body


@pytest.mark.slow  # a headless Chromium and a web server: seconds
def test_the_status_page_reads_with_the_token_it_is_given(database_url: str) -> None:
    """With READ_TOKEN set, the page says a token is needed, then shows the figures with the one typed in."""
    binary = chromium()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): status page not rendered")
    port = free_port()
    proc = start_web({**settings_env(settings_for(database_url)), "READ_TOKEN": READ}, port)
    browser = Browser(binary)
    try:
        browser.goto(f"http://127.0.0.1:{port}/status?refresh=500")
        browser.wait_for("document.getElementById('updated').textContent.includes('token is needed')")
        assert not browser.eval("document.getElementById('admin').hidden")
        browser.eval(
            f"document.getElementById('token').value = {READ!r}; document.getElementById('token-save').click()"
        )
        browser.wait_for("!document.getElementById('updated').textContent.includes('token')")
        browser.wait_for("document.getElementById('health').textContent !== 'error'")
    finally:
        browser.close()
        proc.stop()
