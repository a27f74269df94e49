"""The listener's heartbeat: a row per process in `listener_heartbeats`, and freshness samples.

Every listener process (active or standby) upserts its row every `interval` seconds. The active one
also writes what it last saw of the chain (the node's head block and its time) and where it is (the
checkpoint block and its time), and appends a freshness sample for the status page's chart. The
web's monitor (web/monitor.py) reads these rows: a stopped or hung listener stops beating, so its
status turns stale, then offline, instead of a "lag 0" computed from numbers it wrote long ago.

Written from its own thread with its own connection: a long catch-up batch does not delay it, and
a hung streamer still beats (the row's processed_block then stops moving, which the latency shows).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

log = logging.getLogger(__name__)

SAMPLES_KEPT = "1 day"
_PRUNE_EVERY = 100  # beats


@dataclass(frozen=True)
class Beat:
    role: str  # 'active' or 'standby'
    term: int | None = None
    head_block: int | None = None
    head_time_ms: int | None = None
    processed_block: int | None = None
    processed_time_ms: int | None = None
    head_seen_ms: int | None = None  # when the node last showed head_block as its head
    state: str | None = None  # the active one's (listener/streamer.py: following, node_behind, ...)
    state_detail: str | None = None
    state_since_ms: int | None = None


class Heartbeat:
    def __init__(self, url: str, *, name: str, holder: str, interval: float, snapshot: Callable[[], Beat]) -> None:
        self.url = url
        self.name = name
        self.holder = holder
        self.interval = interval
        self.snapshot = snapshot
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._conn: psycopg.Connection | None = None
        self._beats = 0
        self._failing = False

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except psycopg.Error as exc:
                if not self._failing:  # once per outage
                    log.warning("heartbeat: cannot write to PostgreSQL: %s", str(exc).strip())
                self._failing = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            else:
                if self._failing:
                    log.info("heartbeat: writing again")
                self._failing = False
            if self._stop.wait(self.interval):
                return

    def beat(self) -> None:
        beat = self.snapshot()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        conn = self._conn
        with conn.transaction():
            conn.execute(
                "INSERT INTO listener_heartbeats (holder, name, role, term, started_at, beat_at, head_block,"
                " head_time, processed_block, processed_time, head_seen_at, state, state_detail, state_since)"
                " VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (holder) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,"
                " term = EXCLUDED.term, started_at = EXCLUDED.started_at, beat_at = EXCLUDED.beat_at,"
                " head_block = EXCLUDED.head_block, head_time = EXCLUDED.head_time,"
                " processed_block = EXCLUDED.processed_block, processed_time = EXCLUDED.processed_time,"
                " head_seen_at = EXCLUDED.head_seen_at, state = EXCLUDED.state,"
                " state_detail = EXCLUDED.state_detail, state_since = EXCLUDED.state_since",
                (
                    self.holder,
                    self.name,
                    beat.role,
                    beat.term,
                    self.started_at,
                    beat.head_block,
                    _time(beat.head_time_ms),
                    beat.processed_block,
                    _time(beat.processed_time_ms),
                    _time(beat.head_seen_ms),
                    beat.state,
                    beat.state_detail,
                    _time(beat.state_since_ms),
                ),
            )
            # Only a listener that reads the chain has a latency to sample: behind-the-checkpoint
            # or failing cycles would write the last known figures as if they were fresh.
            if (
                beat.role == "active"
                and beat.state in (None, "following", "catching_up")
                and beat.head_block is not None
                and beat.processed_block is not None
                and beat.head_time_ms is not None
                and beat.processed_time_ms is not None
            ):
                conn.execute(
                    "INSERT INTO freshness_samples (head_block, processed_block, latency_ms) VALUES (%s, %s, %s)",
                    (beat.head_block, beat.processed_block, max(0, beat.head_time_ms - beat.processed_time_ms)),
                )
            self._beats += 1
            if self._beats % _PRUNE_EVERY == 1:
                conn.execute(f"DELETE FROM freshness_samples WHERE sampled_at < now() - interval '{SAMPLES_KEPT}'")
                conn.execute(f"DELETE FROM listener_heartbeats WHERE beat_at < now() - interval '{SAMPLES_KEPT}'")


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
