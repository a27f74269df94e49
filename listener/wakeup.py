"""Push wake-ups for the listener: a WebSocket feed of java-tron event-plugin block triggers.

Each message only *wakes* the listener (sets an Event its idle wait is blocked on); what to index
is still decided by polling the HTTP API from the checkpoint. So the feed may drop, repeat, reorder
or lose messages (java-tron's ZeroMQ queue drops past `sendqueuelength`: docs/architecture/event.md)
without any effect on correctness:
freshness is bounded by the push while it works, and by POLL_INTERVAL when it does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
import websocket

from ledger.chain.parser import BlockTrigger, ChainDataError, parse_trigger
from ledger.coordination.backoff import backoff

log = logging.getLogger(__name__)


class FeedStale(Exception):
    """No frame, not even a pong, for too long: the connection is presumed dead."""


class WakeupFeed:
    """A daemon thread subscribed to `url`; every valid trigger sets `wake`."""

    def __init__(
        self,
        url: str,
        wake: threading.Event,
        *,
        connect_timeout: float = 5.0,
        ping_interval: float = 10.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_seconds: float = 10.0,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.url = url
        self.wake = wake
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # A connection that drops sooner than this still counts as failing, so a server that
        # accepts and then closes at once is retried with growing delays, not in a tight loop.
        self.stable_seconds = stable_seconds
        self.messages = 0
        self.malformed = 0
        self.connects = 0
        self.last_block: int | None = None
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # between tries; the default ends at close()
        self._ws: websocket.WebSocket | None = None
        self._thread = threading.Thread(target=self._run, name="ws-wakeup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.abort()  # wakes the thread out of a blocking recv
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ws = websocket.create_connection(self.url, timeout=self.connect_timeout, enable_multithread=True)
            except Exception as exc:  # noqa: BLE001 - DNS, refused, handshake: all mean "retry later"
                failures += 1
                self._on_failure(failures, f"cannot connect: {exc.__class__.__name__}: {exc}")
                continue
            self._ws = ws
            self.connects += 1
            if self.connects == 1:
                log.info("wake-up feed: subscribed to %s", self.url)
            # Whatever was pushed while disconnected is lost: look at the chain once now.
            self.wake.set()
            try:
                self._receive(ws, started, failures)
                reason = "closed by the server"
            except Exception as exc:  # noqa: BLE001 - any failure of a connection means reconnect
                reason = f"{exc.__class__.__name__}: {exc}"
            finally:
                self._ws = None
                ws.shutdown()
            if self._stop.is_set():
                return
            failures = 1 if time.monotonic() - started >= self.stable_seconds else failures + 1
            self._on_failure(failures, f"connection lost: {reason}")

    def _receive(self, ws: websocket.WebSocket, started: float, failures: int) -> None:
        ws.settimeout(self.ping_interval)
        last_frame = time.monotonic()
        while not self._stop.is_set():
            if failures and time.monotonic() - started >= self.stable_seconds:
                log.info("wake-up feed %s stable again after %d failure(s)", self.url, failures)
                failures = 0
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_frame > 3 * self.ping_interval:
                    raise FeedStale(f"nothing received for {3 * self.ping_interval:.0f}s") from None
                ws.ping()  # the pong (or a message) proves the connection is alive
                continue
            last_frame = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                self._on_message(data)

    def _on_message(self, data: bytes | str) -> None:
        try:
            trigger = parse_trigger(orjson.loads(data))
        except (orjson.JSONDecodeError, ChainDataError) as exc:
            self.malformed += 1
            # Logged, never fatal: the poll does the work anyway. Every 100th after the first
            # few, so a feed that only speaks garbage cannot flood the log.
            if self.malformed <= 3 or self.malformed % 100 == 0:
                log.warning(
                    "wake-up feed: ignoring malformed message (%d so far): %s: %.120r", self.malformed, exc, data
                )
            return
        self.messages += 1
        if isinstance(trigger, BlockTrigger):
            # removed=true (a rolled-back block) wakes too: the next cycle's fork check handles it.
            self.last_block = trigger.block_number
        self.wake.set()

    def _on_failure(self, failures: int, reason: str) -> None:
        # Jittered: many listeners must not reconnect in step.
        delay = backoff(failures, base=self.min_backoff, cap=self.max_backoff, jitter=(0.5, 1.0))
        # Once per burst: the first failure says what happened; the rest of the burst is quiet.
        if failures == 1:
            log.warning(
                "wake-up feed %s: %s; reconnecting with backoff (polling every POLL_INTERVAL meanwhile)",
                self.url,
                reason,
            )
        else:
            log.debug("wake-up feed %s: %s (failure %d); next try in %.1fs", self.url, reason, failures, delay)
        self._sleep(delay)
