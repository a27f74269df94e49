"""The job items this worker process is working on, marked taken again while their jobs run.

An item a worker took and never closed is free again once nobody marks it (ledger/store/jobruns.py,
`TAKEN_SECONDS`): that is how a killed worker's item is told from one whose job is still running,
whatever the broker. One thread per process marks every item held, in one statement, every
`KEEP_TAKEN_SECONDS`, on a connection of its own: the pool has one connection per worker thread,
and each is held by its job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator

import psycopg

from ledger.store.jobruns import KEEP_TAKEN_SECONDS, keep_taken

log = logging.getLogger(__name__)


class TakenItems:
    def __init__(self, database_url: str, *, interval: float = KEEP_TAKEN_SECONDS) -> None:
        self._url = database_url
        self.interval = interval
        self._lock = threading.Lock()
        self._items: Counter[tuple[int, str]] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    @contextlib.contextmanager
    def holding(self, run_id: int, account: str) -> Iterator[None]:
        """Keep the item marked taken while the block runs."""
        key = (run_id, account)
        with self._lock:
            self._items[key] += 1
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="taken-items", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._items[key] -= 1
                if self._items[key] <= 0:
                    del self._items[key]

    def mark(self) -> int:
        """Mark every item held now; how many rows were marked."""
        with self._lock:
            items = list(self._items)
        if not items:
            return 0
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        return keep_taken(self._conn, items)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.mark()
            except psycopg.Error as exc:
                # Marked again at the next tick; items unmarked past TAKEN_SECONDS may run twice
                # (a job is idempotent), never not at all.
                log.warning("job items: could not mark the items being worked on as taken: %s", exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        if self._conn is not None:
            self._conn.close()
