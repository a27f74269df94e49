"""A clock that moves only when a test says so, for logic that takes a `ledger.clocks.Clock`."""

from __future__ import annotations

import threading


class ManualClock:
    """Call it for the time; `advance(seconds)` moves it. Thread-safe."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
