"""`python -m listener backfill --since DATE --account T…`: an account's history from TronGrid's
account index (`GET /v1/accounts/{a}/transactions`), not from every block since DATE.

A year of one account is a few hundred requests of 200 records, where a block scan at TronGrid's
rate (about 10 requests/s, 100 blocks a request) would take days for ten million blocks. The
records come from the one pager over that index (`ledger.chain.trongrid.account_pages`: fingerprint
paging, the API key and rate limits handled by the node client) and go through the TronGrid-record
parser (`parse_trongrid_record`) and the listener's sink, so workers store them like any other. A
page that TronGrid or the broker failed on is read again, after a backoff.

Only confirmed records are read: what is above the solidified head is left to a block-range pass
from there (self-run nodes keep the block-range backfill for everything).

Time base: a TronGrid record does not give its parent block's time, java-tron's "now" for it
(Manager.processBlock). It is taken as one slot (3 s) before the block; a missed slot right before
the block makes that up to a few seconds late, only for lock ends and lot maturity.

Progress is kept in a checkpoint row `history:<account>:<since>`: a rerun resumes from the last
block whose records were all sent (the records of that block are sent again: workers upsert).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.chain.trongrid import account_pages, page_operations
from ledger.coordination.backoff import announced_wait, backoff
from ledger.coordination.queue import Sink
from ledger.domain import BLOCK_INTERVAL_MS, Operation
from ledger.ops.logs import ProgressLine
from listener.store import BackfillStore
from listener.streamer import RETRY_BASE, RETRY_CAP

log = logging.getLogger(__name__)


@dataclass
class HistoryResult:
    pages: int = 0
    records: int = 0
    operations: int = 0
    last_block: int = -1
    last_time_ms: int = 0
    completed: bool = False


def history_checkpoint_name(account: str, since_ms: int) -> str:
    return f"history:{account}:{since_ms}"


class AccountHistory:
    """Page through one account's confirmed transactions since `since_ms`, oldest first."""

    def __init__(
        self,
        node: TronNode,
        sink: Sink,
        store: BackfillStore,
        *,
        account: str,
        since_ms: int,
        tracked: Container[str],
        progress: ProgressLine | None = None,
        stop: threading.Event | None = None,
        max_failures: int = 10,
    ) -> None:
        self.node = node
        self.sink = sink
        self.store = store
        self.account = account
        self.since_ms = since_ms
        self.tracked = tracked
        self.progress = progress or ProgressLine()
        self.stop = stop or threading.Event()
        self.max_failures = max_failures

    def run(self) -> HistoryResult:
        result = HistoryResult()
        start_ms = self.since_ms
        resumed = self._resume_point()
        if resumed is not None:
            result.last_block, start_ms = resumed
            log.info("resuming %s from block %s", self.store.name, result.last_block)
        fingerprint: str | None = None  # where the page being read starts (None: the first)
        started = time.monotonic()
        failures = 0
        while not self.stop.is_set() and not result.completed:
            try:
                for page in account_pages(self.node, self.account, since_ms=start_ms, fingerprint=fingerprint):
                    operations = self._operations(page.records)
                    self.sink.publish(operations)
                    failures = 0
                    result.pages += 1
                    result.records += len(page.records)
                    result.operations += len(operations)
                    result.completed = page.fingerprint is None
                    self._advance(result, page.records, done=result.completed)
                    self.progress.update(self._line(result, started), force=result.completed)
                    fingerprint = page.fingerprint
                    if self.stop.is_set():
                        break
            except (NodeUnavailable, ConnectionError) as exc:
                # Read again from the page that failed, whether TronGrid or the broker did.
                failures += 1
                if failures >= self.max_failures:
                    raise
                delay = backoff(failures, base=RETRY_BASE, cap=RETRY_CAP, at_least=announced_wait(exc))
                log.warning("history page failed (%d): %s; retrying in %.1fs", failures, exc, delay)
                self.stop.wait(delay)
        self.progress.finish()
        return result

    def _operations(self, records: list[dict[str, Any]]) -> list[Operation]:
        # See the module docstring: the parent block is taken to be one slot earlier.
        return [
            dataclasses.replace(op, parent_time_ms=op.block_time_ms - BLOCK_INTERVAL_MS)
            for op in page_operations(records, self.tracked, "history")
        ]

    def _advance(self, result: HistoryResult, records: list[Any], done: bool) -> None:
        if not records:
            return
        last = records[-1]
        block, ms = int(last["blockNumber"]), int(last["block_timestamp"])
        result.last_block, result.last_time_ms = block, ms
        # The checkpoint is the last block whose records were ALL sent: the page may end inside
        # a block, so it is the previous block until the history is done.
        self.store.advance_to(block if done else block - 1, ms)

    def _resume_point(self) -> tuple[int, int] | None:
        row = (
            self.store._connection()
            .execute("SELECT block_num, block_time_ms FROM listener_checkpoint WHERE name = %s", (self.store.name,))
            .fetchone()
        )
        if row is None or row[1] is None:
            return None
        return int(row[0]), int(row[1])

    def _line(self, result: HistoryResult, started: float) -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(result.last_time_ms / 1000)) if result.last_time_ms else "-"
        return (
            f"history of {self.account}: {result.pages} page(s), {result.records} records, "
            f"{result.operations} ops, up to block {result.last_block} ({when} UTC), "
            f"{result.pages / elapsed:.1f} pages/s"
        )
