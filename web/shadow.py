"""Shadow mode: compare a sample of native records answers with the legacy (TronGrid) answer.

`rollout shadow P` makes each web process take P % of the first pages the new path answered
(natively) and ask the legacy path the same question on a background thread, so each step of the
gray release can be checked before the next one moves more accounts.
The request never waits for it: the work goes through a small bounded queue, and when the
queue is full the sample is dropped (counted), so a slow TronGrid cannot pile up work. Every
TronGrid request goes through the shared request budget like any other.

What is compared is what both sides can know:
- only rows at or below the ledger's confirmed and stored block: min(the solidified head the
  listener recorded, the persisted watermark); the legacy path reads confirmed rows only, and a
  row above the watermark may still be in a worker's queue;
- only the block range both pages cover: a full page ends somewhere in the history, and rows
  in its oldest block may continue on the next page, so that block and older are left out;
- per row (tx_id, op_index): operation type, resource, amount, owner and receiver (not `id`,
  which only the ledger has, nor times the legacy path estimates, web/legacy.py).

The native side is read again from PostgreSQL in the worker, after the bound: the served page
may be older than the bound (a page cached just before a block was stored), which would count
a difference that is only time.

Counts go to `ledger_shadow_comparisons_total{result=match|mismatch|error|dropped}` (pushed with
the web's other counters); a mismatch is logged with the ids that differ.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from typing import Any

from psycopg_pool import ConnectionPool

from ledger.chain.node import TronNode
from ledger.config import Settings
from ledger.ops.metrics import Counters
from ledger.store.accounting import MAIN_CHECKPOINT
from web.legacy import legacy_page
from web.pg import read_connection
from web.queries import fetch_records

log = logging.getLogger(__name__)

COMPARISONS = "ledger_shadow_comparisons_total"  # {result}
QUEUE_SIZE = 8
_SHOWN_IDS = 10  # ids per side in a mismatch log line

Key = tuple[str, int]
Job = tuple[str, str, int]  # kind, address, limit


class ShadowComparer:
    def __init__(self, node: TronNode, pool: ConnectionPool, counters: Counters, settings: Settings) -> None:
        self.node = node
        self.pool = pool
        self.counters = counters
        self.settings = settings
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="shadow-compare", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            # Make room for the stop mark: a dropped sample is only a sample.
            with contextlib.suppress(queue.Empty):
                self._jobs.get_nowait()
            self._jobs.put_nowait(None)
        self._thread.join(timeout=10)

    def maybe_offer(self, percent: int, kind: str, address: str, limit: int) -> None:
        if percent <= 0 or random.random() * 100 >= percent:
            return
        try:
            self._jobs.put_nowait((kind, address, limit))
        except queue.Full:
            self.counters.inc(COMPARISONS, {"result": "dropped"})

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                result = self.compare(*job)
            except Exception as exc:  # noqa: BLE001 - a failed comparison is counted, never fatal
                log.warning("shadow: comparison of %s %s failed: %s: %s", job[0], job[1], type(exc).__name__, exc)
                result = "error"
            self.counters.inc(COMPARISONS, {"result": result})

    def compare(self, kind: str, address: str, limit: int) -> str:
        """'match' or 'mismatch' for the first page of `kind` records of `address`."""
        with read_connection(self.pool, timeout=2.0) as conn:
            bound = confirmed_stored_block(conn)
            native = fetch_records(conn, kind, address, limit).rows
        if bound is None:
            raise RuntimeError("the ledger has no confirmed block yet")
        legacy = legacy_page(
            self.node,
            kind,
            address,
            page=1,
            limit=limit,
            unfreeze_delay_seconds=self.settings.unfreeze_delay_seconds,
            max_pages=self.settings.legacy_max_pages,
        )
        low = -1
        if len(native) >= limit:
            low = max(low, min(r["block_num"] for r in native))
        if (len(legacy.rows) >= limit or not legacy.complete) and legacy.rows:
            low = max(low, min(r["block_num"] for r in legacy.rows))
        ours, theirs = _keyed(native, low, bound), _keyed(legacy.rows, low, bound)
        if ours == theirs:
            return "match"
        only_ours = sorted(ours.keys() - theirs.keys())
        only_theirs = sorted(theirs.keys() - ours.keys())
        changed = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
        log.warning(
            "shadow: %s records of %s differ in blocks %d..%d: only in the ledger %s, only in TronGrid %s,"
            " different %s",
            kind,
            address,
            low + 1,
            bound,
            _ids(only_ours),
            _ids(only_theirs),
            _ids(changed),
        )
        return "mismatch"


def confirmed_stored_block(conn: Any) -> int | None:
    """The highest block whose rows the ledger has final and stored: min(solid head, persisted watermark)."""
    row = conn.execute(
        "SELECT c.solid_block, (SELECT persisted_block FROM listener_checkpoint WHERE name = %s)"
        " FROM chain_state c WHERE c.id = 1",
        (MAIN_CHECKPOINT,),
    ).fetchone()
    if row is None or not row[0]:
        return None
    solid, persisted = int(row[0]), row[1]
    return solid if persisted is None else min(solid, int(persisted))


def _keyed(rows: list[dict[str, Any]], low: int, high: int) -> dict[Key, tuple[Any, ...]]:
    return {
        (r["tx_id"], r["op_index"]): (
            r["operation_type"],
            r["resource"],
            r["amount"],
            r["owner_address"],
            r.get("receiver_address"),
        )
        for r in rows
        if low < r["block_num"] <= high and r["status"] != "orphaned"  # a fork's leftovers: not on TronGrid
    }


def _ids(keys: list[Key]) -> str:
    shown = [f"{tx}:{op}" for tx, op in keys[:_SHOWN_IDS]]
    more = f" (+{len(keys) - _SHOWN_IDS} more)" if len(keys) > _SHOWN_IDS else ""
    return f"[{', '.join(shown)}]{more}" if keys else "[]"
