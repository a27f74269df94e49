"""`python -m listener backfill`: index a past block range for some pool accounts.

The blocks go through the same NodeAdapter (getblockbylimitnext batches, TransactionInfo where
amounts live only there) and the same BrokerSink (one message per operation, the listener's
queue) as live blocks, so workers cannot tell a backfilled record from a live one, and the two may
overlap freely (workers upsert by chain identity).

Progress is kept in its own `listener_checkpoint` row, `backfill:<from>-<to>:<accounts hash>`, so
rerunning the same command resumes where an interrupted one stopped. That row is written with its
own statement, not `PgStore.save_checkpoint`: the main checkpoint's save also moves `chain_state`
and the fork-check window, which a walk through old blocks must not touch. Two runs of the same
backfill exclude each other through the same lease (advisory lock + fencing term) as the listener.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.chain.parser import BlockParse, ParseIssue
from ledger.coordination.backoff import announced_wait, backoff
from ledger.coordination.lease import CheckpointFenced
from ledger.coordination.queue import Sink
from listener.adapter import ChainAdapter
from listener.store import PgStore, move_checkpoint
from listener.streamer import RETRY_BASE, RETRY_CAP

log = logging.getLogger(__name__)


class BackfillError(RuntimeError):
    """The backfill cannot run as asked (bad range, unknown account); the message says why."""


# -- where to start ----------------------------------------------------------------------------


def parse_since(text: str) -> int:
    """An ISO date or date-time (UTC unless it says otherwise) as milliseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackfillError(f"--since {text!r}: expected 2025-01-01 or 2025-01-01T12:00[:00][Z|+hh:mm]") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def block_timestamp(block: dict[str, Any]) -> int:
    try:
        value = block["block_header"]["raw_data"]["timestamp"]
    except (KeyError, TypeError):
        raise NodeUnavailable("block without block_header.raw_data.timestamp") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise NodeUnavailable(f"block timestamp {value!r} is not an integer")
    return value


def first_block_since(node: TronNode, since_ms: int, head: int) -> int:
    """The first block whose time is >= since_ms, by binary search on getblockbynum (about
    log2(head) requests). Blocks the node does not have (pruned, or before a test chain's first
    block) count as older, so the answer is then the node's first block."""
    head_block = node.block(head)
    if head_block is None or block_timestamp(head_block) < since_ms:
        raise BackfillError(f"--since is after the head block {head}: nothing to backfill")
    lo, hi = 0, head  # invariant: the answer is in lo..hi, and block hi qualifies
    while lo < hi:
        mid = (lo + hi) // 2
        block = node.block(mid)
        if block is not None and block_timestamp(block) >= since_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo


def checkpoint_name(start: int, end: int | None, accounts: list[str]) -> str:
    """Same command, same name: that is what makes a rerun resume. An open range ends at 'head'."""
    digest = hashlib.sha256(",".join(sorted(accounts)).encode()).hexdigest()[:12]
    return f"backfill:{start}-{'head' if end is None else end}:{digest}"


# -- state -------------------------------------------------------------------------------------


class RangeStore(Protocol):
    """What a walk over a block range needs of its checkpoint (BackfillStore in PostgreSQL)."""

    name: str

    def position(self) -> int | None: ...

    def advance(self, block_num: int, block_id: str) -> None: ...

    def record_issues(self, issues: list[ParseIssue]) -> None: ...


class BackfillStore(PgStore):
    """The backfill's own checkpoint row (fenced by its term like the main one), plus record_issues."""

    def position(self) -> int | None:
        """The last block done, or None before the first batch."""
        row = (
            self._connection()
            .execute("SELECT block_num FROM listener_checkpoint WHERE name = %s", (self.name,))
            .fetchone()
        )
        return row[0] if row else None

    def advance(self, block_num: int, block_id: str) -> None:
        move_checkpoint(self._connection(), self.name, self.term, block_num, block_id)

    def advance_to(self, block_num: int, block_time_ms: int) -> None:
        """For a walk by time (listener.history): the block and its timestamp, no block id."""
        move_checkpoint(self._connection(), self.name, self.term, block_num, None, block_time_ms)


class ProgressLine:
    """One line on stderr: rewritten in place on a terminal, a new line every few seconds otherwise."""

    def __init__(self, out: TextIO | None = None, every: float = 5.0) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.every = 0.25 if self.tty else every
        self._last = float("-inf")
        self._width = 0

    def update(self, text: str, force: bool = False) -> bool:
        """Write the line unless one was written less than `every` seconds ago; True if written."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return False
        self._last = now
        if self.tty:
            self.out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        return True

    def finish(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()


# -- the walk ----------------------------------------------------------------------------------


@dataclass
class Result:
    first: int
    last: int  # the last block done (first - 1 if none)
    blocks: int = 0  # in this run
    operations: int = 0
    completed: bool = False


class Backfill:
    """Walk start..end (end None: the head, re-read as it moves) in batches; checkpoint each."""

    def __init__(
        self,
        adapter: ChainAdapter,
        store: RangeStore,
        sink: Sink,
        *,
        accounts: list[str],
        start: int,
        end: int | None,
        batch_blocks: int = 100,
        settle_until: float = 0.0,
        poll_interval: float = 1.0,
        max_failures: int = 10,
        progress: ProgressLine | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.sink = sink
        self.tracked = frozenset(accounts)
        self.start = start
        self.end = end
        self.batch_blocks = max(1, batch_blocks)
        # Open range after --add-account: keep following the head until this monotonic time, by
        # when the running listener has re-read pool_accounts and tracks the new account itself.
        self.settle_until = settle_until
        self.poll_interval = poll_interval
        self.max_failures = max_failures
        self.progress = progress or ProgressLine()
        self.stop = stop or threading.Event()

    def run(self) -> Result:
        done = self.store.position()
        if done is not None:
            log.info("resuming %s after block %d", self.store.name, done)
        position = self.start - 1 if done is None else max(done, self.start - 1)
        result = Result(first=self.start, last=position)
        started = time.monotonic()
        failures = 0
        solid = -1
        shown = position  # the block of the last progress line written
        while not self.stop.is_set():
            try:
                head = self.adapter.head_number()
                solid = self.adapter.solid_number()
                end = head if self.end is None else self.end
                if self.end is not None and self.end > head:
                    raise BackfillError(f"--to-block {self.end} is past the head {head}")
                if position >= end:
                    if self.end is None and time.monotonic() < self.settle_until:
                        self.stop.wait(self.poll_interval)
                        continue
                    result.completed = True
                    break
                hi = min(end, position + self.batch_blocks)
                blocks = self.adapter.export(position + 1, hi + 1, self.tracked, solid)
                count = self._emit(blocks, position + 1, hi)
                self.store.advance(hi, blocks[-1].block_id)
            except (BackfillError, CheckpointFenced):
                raise
            except Exception as exc:
                failures += 1
                if failures >= self.max_failures:
                    raise BackfillError(f"giving up after {failures} failures in a row: {exc}") from exc
                delay = backoff(failures, base=RETRY_BASE, cap=RETRY_CAP, at_least=announced_wait(exc))
                if failures == 1:
                    log.warning("batch after block %d failed: %s: %s; retrying", position, exc.__class__.__name__, exc)
                self.stop.wait(delay)
                continue
            failures = 0
            position = result.last = hi
            result.blocks += len(blocks)
            result.operations += count
            if self.progress.update(self._line(result, end, started)):
                shown = result.last
        if result.last != shown:  # the final position, unless the last line already showed it
            self.progress.update(self._line(result, result.last, started), force=True)
        self.progress.finish()
        if solid >= 0:
            # Rows above the solidified head went out 'pending'; without a running listener
            # nothing else would confirm the ones that are solid by now.
            self.sink.confirm(solid)
        return result

    def _emit(self, blocks: list[BlockParse], first: int, last: int) -> int:
        numbers = [b.number for b in blocks]
        if numbers != list(range(first, last + 1)):
            raise NodeUnavailable(f"adapter returned blocks {numbers[:3]}... for {first}..{last}")
        issues = [issue for block in blocks for issue in block.issues]
        for issue in issues:
            log.error("skipped malformed transaction: block %s tx %s: %s", issue.block_num, issue.tx_id, issue.message)
        if issues:
            self.store.record_issues(issues)
        return self.sink.publish([op for block in blocks for op in block.operations])

    def _line(self, result: Result, end: int, started: float) -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = result.blocks / elapsed
        left = max(end - result.last, 0)
        total = max(end - self.start + 1, 1)
        eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
        return (
            f"backfill block {result.last}/{end} ({100 * (result.last - self.start + 1) / total:.1f}%), "
            f"{rate:.0f} blocks/s, {result.operations} ops, ETA {eta}"
        )
