"""The process's own clock, as a parameter of whatever measures elapsed time with it.

Logic that decides by elapsed time in one process (a TTL, a breaker's pause, a due time, a lease's
renew deadline, a cache of figures) takes a `Clock` at construction, defaulting to the clock it
needs in production (mostly `time.monotonic`), rather than reading `time` itself; a test moves
time by advancing a clock of its own instead of sleeping.

Not here: decisions shared between processes are made on the servers' clocks, which no process
moves (the request budget and the cache's generations on Redis's `TIME`, the lease's expiry on
PostgreSQL's `now()`); chain time (locks ending, lots maturing) comes from the blocks'
timestamps (`ledger/store/clock.py`).
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds from an arbitrary origin: only the difference of two readings means anything
(`time.time` is a Clock too, when the origin must be the epoch)."""
