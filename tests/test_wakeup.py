"""The WebSocket wake-up: a tiny scripted WS server for the client's edge cases, then the real
simulator feed for freshness and for zero loss while the feed keeps dropping."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from harness.procs import Proc
from harness.servers import free_port
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    main_checkpoint,
    settings_env,
    start_chain,
    start_listener,
    start_simulator,
    start_worker,
    wait_until,
)
from harness.truth import assert_ledger_matches_truth
from ledger.config import Settings
from listener.wakeup import WakeupFeed

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ScriptedWsServer:
    """Accepts WebSocket clients and sends them whatever the test says; no reading after the
    handshake. Independent of the simulator, so the client's edge cases are tested on their own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/ws"
        self.clients: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID.encode()).digest())
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            with self._lock:
                self.clients.append(sock)

    def send(self, text: str | bytes) -> None:
        payload = text.encode() if isinstance(text, str) else text
        assert len(payload) < 1 << 16
        size = len(payload)
        head = bytes([0x81, size]) if size < 126 else bytes([0x81, 126]) + size.to_bytes(2, "big")  # FIN + text
        with self._lock:
            for sock in self.clients:
                sock.sendall(head + payload)

    def drop_all(self) -> None:
        with self._lock:
            for sock in self.clients:
                sock.close()  # abrupt: no close frame, as a crashed relay would
            self.clients.clear()

    def close(self) -> None:
        self._listener.close()
        self.drop_all()


def trigger(number: int, removed: bool = False) -> str:
    return orjson.dumps(
        {
            "timeStamp": 1_700_000_000_000 + number * 3000,
            "triggerName": "blockTrigger",
            "blockNumber": number,
            "blockHash": f"{number:016x}" + "0" * 48,
            "parentHash": f"{number - 1:016x}" + "0" * 48,
            "transactionSize": 0,
            "latestSolidifiedBlockNumber": number - 19,
            "removed": removed,
            "transactionList": [],
        }
    ).decode()


@pytest.fixture
def server() -> Iterator[ScriptedWsServer]:
    srv = ScriptedWsServer()
    yield srv
    srv.close()


def _feed(url: str, wake: threading.Event) -> WakeupFeed:
    return WakeupFeed(url, wake, min_backoff=0.05, max_backoff=0.2, ping_interval=1.0, stable_seconds=2.0)


def test_triggers_wake_and_malformed_messages_are_ignored(server: ScriptedWsServer) -> None:
    wake = threading.Event()
    feed = _feed(server.url, wake)
    feed.start()
    try:
        wait_until(lambda: len(server.clients) == 1, 5, "the feed to connect")
        assert wake.wait(1)  # a (re)connect wakes once: what was pushed meanwhile is lost
        wake.clear()
        for bad in ("not json", '{"triggerName": "blockTrigger"}', '{"triggerName": "x"}', "[1, 2]"):
            server.send(bad)
        wait_until(lambda: feed.malformed == 4, 5, "the malformed messages to be seen")
        assert not wake.is_set()
        server.send(trigger(100))
        assert wake.wait(1)
        assert feed.last_block == 100
        wake.clear()
        server.send(trigger(100, removed=True))  # a rolled-back block wakes too (the fork check runs)
        assert wake.wait(1)
    finally:
        feed.close()
    assert not feed._thread.is_alive()


def test_drops_reconnect_with_one_log_line_per_burst(
    server: ScriptedWsServer, caplog: pytest.LogCaptureFixture
) -> None:
    wake = threading.Event()
    feed = _feed(server.url, wake)
    caplog.set_level(logging.DEBUG, logger="listener.wakeup")
    feed.start()
    try:
        for n in range(1, 5):

            def connected(n: int = n) -> bool:
                return feed.connects == n and len(server.clients) == 1

            wait_until(connected, 5, f"connection {n}")
            server.drop_all()
        wait_until(lambda: len(server.clients) == 1, 5, "the last reconnect")
        wake.clear()
        server.send(trigger(700))
        assert wake.wait(1)
    finally:
        feed.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_an_unreachable_feed_is_retried_without_flooding(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []
    six = threading.Event()

    def pause(seconds: float) -> None:  # the waits are recorded, not waited
        waits.append(seconds)
        if len(waits) >= 6:
            six.set()
            time.sleep(0.01)  # until close(): no need to spin

    wake = threading.Event()
    url = f"ws://127.0.0.1:{free_port()}/ws"  # a port nothing listens on
    feed = WakeupFeed(url, wake, min_backoff=0.05, max_backoff=0.2, ping_interval=1.0, stable_seconds=2.0, sleep=pause)
    caplog.set_level(logging.DEBUG, logger="listener.wakeup")
    feed.start()
    assert six.wait(10)
    feed.close()
    # Each try waits the jittered (x0.5-1) backoff: 0.05 s doubling per failure, capped at 0.2 s
    for n, seconds in enumerate(waits[:6]):
        full = min(0.2, 0.05 * 2**n)
        assert full / 2 <= seconds <= full, waits
    attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(attempts) == len(waits)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert not wake.is_set()


# -- with the simulator's /ws feed and real processes ---------------------------------------------


def _env(settings: Settings, url: str, **extra: str) -> dict[str, str]:
    return {
        **settings_env(settings),
        "QUEUE_NAME": f"ws-{uuid.uuid4().hex[:8]}",
        "TRON_NODE_URL": url,
        "TRON_WS_URL": url.replace("http://", "ws://") + "/ws",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        **extra,
    }


@pytest.mark.slow
def test_push_bounds_freshness_not_the_poll_interval(
    settings: Settings, clean_db: str, redis_clean: object, procs: list[Proc]
) -> None:
    # Given a listener at the head that polls only every 10 s, subscribed to the block feed
    sim_proc, url = start_simulator("--history-blocks", "20", "--paused")
    procs.append(sim_proc)
    sim = Simulator(url)
    procs.append(start_listener(_env(settings, url, POLL_INTERVAL="10")))
    wait_until(lambda: main_checkpoint(clean_db) == sim.status()["head"], 15, "the listener at the head")
    wait_until(lambda: httpx.get(url + "/sim/ws").json()["clients"] == 1, 10, "the feed subscription")
    time.sleep(0.5)  # let the wake-up of the connect itself pass
    # When blocks are made, then each is indexed well inside the poll interval
    for _ in range(3):
        sim.produce(1)
        head = sim.status()["head"]
        made = time.monotonic()

        def reached(head: int = head) -> bool:
            return main_checkpoint(clean_db) == head

        wait_until(reached, 5, f"block {head}", interval=0.02)
        assert time.monotonic() - made < 1.5


@pytest.mark.slow
def test_feed_dropped_repeatedly_loses_nothing(
    settings: Settings, clean_db: str, redis_clean: object, procs: list[Proc]
) -> None:
    # Given a live chain whose feed closes every connection every 0.3 s, a worker and a listener
    sim = start_chain(
        procs,
        settings,
        "--block-interval",
        "0.2",
        "--history-blocks",
        "100",
        "--ops-per-block",
        "2",
        "--ws-drop-every",
        "0.3",
    )
    url = sim.url
    env = _env(settings, url, POLL_INTERVAL="2", START_BLOCK=str(sim.status()["start_block"]))
    procs.append(start_worker(env))
    listener = start_listener(env)
    procs.append(listener)
    # When it runs through many drops
    # (the listener backs off between reconnects, so drops come at growing intervals)
    wait_until(lambda: httpx.get(url + "/sim/ws").json()["dropped"] >= 4, 30, "several feed drops")
    sim.pause()
    head = sim.status()["head"]
    # Then polling still reaches the head and the ledger is exactly the simulator's truth
    wait_until(lambda: main_checkpoint(clean_db) == head, 30, "the listener to reach the head")
    assert_ledger_matches_truth(settings, sim, env)
    warnings = [line for line in listener.output().splitlines() if "WARNING listener.wakeup" in line]
    assert len(warnings) == 1, warnings  # one burst of failures, one line
