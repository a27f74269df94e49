"""The checkpoint loop: from the last committed block to the head, then follow the head.

Order of effects per batch: fetch and parse blocks, enqueue their operations, THEN advance the
checkpoint (recording, in the same transaction, what the blocks must produce). A crash anywhere
re-enqueues at most one batch (harmless: workers upsert by chain identity) and never skips a
block. Every `repair_interval` seconds the loop also runs the accounting's repair pass
(ledger/store/accounting.py), which re-sends what the broker lost after the checkpoint moved on.

The store and the sink a term hands in check before every call and every enqueue that the term
may still act (ledger/coordination/lease.py): a listener that wakes from a pause in the middle of a
cycle stops there (CheckpointFenced ends the loop), and whatever it had already sent carries its
term, which workers refuse once it is over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.chain.node import MAX_BLOCKS_PER_REQUEST, BudgetUnavailable, NodeUnavailable, RateLimited
from ledger.chain.parser import BlockParse, ParseIssue
from ledger.chain.values import NodeError
from ledger.clocks import Clock
from ledger.coordination.backoff import announced_wait, backoff
from ledger.coordination.lease import CheckpointFenced
from ledger.coordination.queue import Sink
from ledger.domain import BLOCK_INTERVAL_MS, PENDING, Operation
from ledger.domain import LISTENER_CATCHING_UP as CATCHING_UP
from ledger.domain import LISTENER_FAILING as FAILING
from ledger.domain import LISTENER_FOLLOWING as FOLLOWING
from ledger.domain import LISTENER_NODE_BEHIND as NODE_BEHIND
from ledger.domain import LISTENER_NODE_UNREACHABLE as NODE_UNREACHABLE
from ledger.domain import LISTENER_RATE_LIMITED as RATE_LIMITED
from ledger.domain import LISTENER_STARTING as STARTING
from listener.adapter import ChainAdapter

log = logging.getLogger(__name__)

RECENT_MARGIN = 100  # block ids kept this far below the solidified head (listener.store)
# A failed cycle (streamer, backfills) waits from RETRY_BASE s doubling to RETRY_CAP s (ledger.coordination.backoff).
RETRY_BASE = 0.5
RETRY_CAP = 30.0


# With a push feed, the timed probe waits this much past the block's due time: the push normally
# arrives first, and a probe that finds nothing is a request spent for nothing.
PUSH_GRACE = 1.0
# No new block for this long (two slots) is a chain gone quiet, not a late block: records that can
# have solidified are then confirmed at once (see _solid).
QUIET_SECONDS = 2 * BLOCK_INTERVAL_MS / 1000
# Empty probes in a row after which the head's header is asked for (see _check_empty_probes).
EMPTY_PROBES_BEFORE_HEAD_CHECK = 5
# While the node is behind the checkpoint, the error is logged again this often: a line an operator
# sees in any minute of the outage, not one per probe.
NODE_BEHIND_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class State:
    """What the listener is doing (ledger.domain's LISTENER_* names), as its heartbeat reports it."""

    name: str
    detail: str
    since_ms: int  # wall clock, when the listener entered this state
    behind_by: int | None = None  # NODE_BEHIND: checkpoint minus the node's head


def _now_ms() -> int:
    return int(time.time() * 1000)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """The state a failed cycle puts the listener in, and what to say about it. Node errors are
    redacted by the node client (no key); anything else is named by its type only, as its message
    may name hosts."""
    if isinstance(exc, RateLimited | BudgetUnavailable):
        return RATE_LIMITED, str(exc)[:300]
    if isinstance(exc, NodeUnavailable):
        return NODE_UNREACHABLE, str(exc)[:300]
    if isinstance(exc, ChainMoved | NodeError):
        return FAILING, f"{type(exc).__name__}: {exc}"[:300]
    return FAILING, type(exc).__name__


class SlotTiming:
    """When to probe for the next block, so that following the head costs about one request a block.

    Blocks come on 3-s slots (java-tron BLOCK_PRODUCED_INTERVAL) and carry their slot time, so at
    the head the next block is due at the last block's timestamp + 3 s, plus the time it takes to
    reach the node we ask. That delay (and any clock skew between us and the chain) is learned:
    a probe at the due time that finds nothing widens the margin by 0.1 s, one that finds the
    block narrows it by 0.01 s, so about one timed probe in eleven comes back empty. After an
    empty probe, and whenever the chain's timestamps run ahead of our clock (a simulator producing
    faster than real time, or a badly skewed clock), it falls back to POLL_INTERVAL.
    """

    MIN_MARGIN = 0.1
    MAX_MARGIN = 2.0

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self.margin = 0.3
        self._due: float | None = None
        self._timed = False

    @property
    def expecting(self) -> bool:
        return self._due is not None

    def at_head(self, last_block_ms: int) -> None:
        due = last_block_ms / 1000 + BLOCK_INTERVAL_MS / 1000
        now = self._clock()
        # Timestamps ahead of our clock: the due time says nothing about when to look.
        self._due = due if last_block_ms / 1000 <= now + 1.0 else None

    def probed(self, found: bool) -> None:
        if self._timed:
            delta = -0.01 if found else 0.1
            self.margin = min(self.MAX_MARGIN, max(self.MIN_MARGIN, self.margin + delta))
        self._timed = False
        if not found:
            self._due = None

    def wait(self, poll_interval: float) -> float:
        if self._due is None:
            return poll_interval
        self._timed = True
        wait = self._due + self.margin - self._clock()
        return min(max(wait, 0.0), BLOCK_INTERVAL_MS / 1000 + self.MAX_MARGIN)


class ChainMoved(RuntimeError):
    """The node changed branches while a batch was being read; the batch is read again."""


class Store(Protocol):
    def load_checkpoint(self) -> tuple[int, str | None] | None: ...

    def save_checkpoint(
        self,
        block_num: int,
        block_id: str,
        head: int,
        solid: int,
        blocks: Sequence[tuple[int, str, str]] = ...,
        operations: Sequence[Operation] = ...,
        block_time_ms: int | None = ...,
        block_times: Sequence[tuple[int, int]] = ...,
    ) -> None: ...

    def recent_block_id(self, block_num: int) -> str | None: ...

    def note_solid(self, solid: int) -> None: ...

    def rollback(
        self, ancestor: int, ancestor_id: str | None, off_chain: Sequence[tuple[int, str]]
    ) -> list[tuple[int, str]]: ...

    def tracked(self) -> frozenset[str]: ...

    def record_issues(self, issues: list[ParseIssue]) -> None: ...


@dataclass
class Progress:
    """What the loop has done; read by tests and by the progress line."""

    checkpoint: int = -1
    checkpoint_time_ms: int | None = None  # timestamp of the checkpoint block, once one was processed
    head: int = 0
    solid: int = 0
    blocks: int = 0
    operations: int = 0
    issues: int = 0
    errors: int = 0
    forks: int = 0
    started: float = field(default_factory=time.monotonic)


class Streamer:
    def __init__(
        self,
        adapter: ChainAdapter,
        store: Store,
        sink: Sink,
        *,
        start_block: int | None = None,
        batch_blocks: int = 100,
        poll_interval: float = 1.0,
        tracked_refresh_seconds: float = 10.0,
        progress_seconds: float = 5.0,
        max_backoff: float = RETRY_CAP,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        wake: threading.Event | None = None,
        repair: Callable[[], object] | None = None,
        repair_interval: float = 5.0,
        solid_every: int = 20,
        push: bool = False,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.sink = sink
        self.start_block = start_block
        self.batch_blocks = max(1, batch_blocks)
        self.poll_interval = poll_interval
        self.tracked_refresh_seconds = tracked_refresh_seconds
        self.progress_seconds = progress_seconds
        self.max_backoff = max_backoff
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        # Set by a push (listener/wakeup.py) to end the idle wait early; whoever sets `stop` sets it too.
        self.wake = wake
        self.repair = repair
        self.repair_interval = repair_interval
        self._repaired_at = float("-inf")
        self.push = push  # a feed sets `wake` on each new block (`wake` alone may only end a term)
        self.progress = Progress()
        self._tracked: frozenset[str] = frozenset()
        self._tracked_at = float("-inf")
        self._confirmed_sent = -1
        self.solid_every = max(1, solid_every)
        self._solid_known = -1
        self._solid_at: int | None = None
        self._solid_lag = 0
        self._pending_blocks: set[int] = set()  # blocks of records sent pending, not yet confirmed
        self._inherited: int | None = None  # the stored checkpoint this streamer started from (see _solid)
        self._timing = SlotTiming()
        self._empty_probes = 0
        self._block_seen_at = time.monotonic()
        self._last_id: str | None = None  # block id at the checkpoint, to check the next parentHash
        self._failures = 0
        self._last_progress = 0.0
        self.state = State(STARTING, "no cycle finished yet", _now_ms())
        self._behind_logged = float("-inf")
        self._behind_now = False  # this cycle found the node behind the checkpoint

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                # The repair pass first: on a new term, it re-sends at once what earlier terms
                # recorded, whose messages workers now drop as stale (ledger/store/accounting.py).
                self._maybe_repair()
                caught_up = self.sync_cycle()
            except CheckpointFenced as exc:
                # The term is over (lease lost, renew deadline passed, a newer term fenced a
                # write): stop at once, in the middle of the cycle if need be.
                log.info("stopping as the active one: %s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - every failure is retried from the checkpoint
                self._on_failure(exc)
                continue
            if self._failures:
                log.info("recovered after %d failed cycle(s)", self._failures)
                self._failures = 0
            if caught_up:
                wait = self.idle_wait()
                if self.wake is None:
                    self._sleep(wait)
                else:
                    # Freshness follows the push; the timed probe is only the fallback for a
                    # message the feed lost, so it comes a little after the block is due.
                    self.wake.wait(wait + (PUSH_GRACE if self.push and self._timing.expecting else 0.0))
                    self.wake.clear()

    def sync_cycle(self) -> bool:
        """Process the blocks past the checkpoint that the node has. True when at the head."""
        self._behind_now = False
        caught_up = self._cycle()
        if not self._behind_now:
            if caught_up:
                self._set_state(FOLLOWING, f"at the node's head, block {self.progress.checkpoint}")
            else:
                behind = self.progress.head - self.progress.checkpoint
                self._set_state(CATCHING_UP, f"block {self.progress.checkpoint}, {behind} behind the node's head")
        return caught_up

    def _cycle(self) -> bool:
        tracked = self._tracked_accounts()
        checkpoint = self._checkpoint()
        solid = self._solid(checkpoint)
        blocks = self.adapter.follow(checkpoint + 1, self.batch_blocks, tracked, solid)
        self._timing.probed(bool(blocks))
        if not blocks:
            if self._check_empty_probes(checkpoint):
                return True  # the node is behind the checkpoint: nothing to confirm or read
            quiet = time.monotonic() - self._block_seen_at >= QUIET_SECONDS
            self._send_confirmation(self._solid(checkpoint, idle=quiet))
            return True
        self._empty_probes = 0
        self._block_seen_at = time.monotonic()
        end = blocks[-1].number
        self._check_contiguous(blocks, checkpoint + 1, end)
        if not self._links(blocks):
            self._roll_back(checkpoint, solid)
            return False
        operations = [op for block in blocks for op in block.operations]
        issues = [issue for block in blocks for issue in block.issues]
        for issue in issues:
            log.error(
                "skipped malformed transaction: block %s tx %s: %s",
                issue.block_num,
                issue.tx_id,
                issue.message,
                extra={"block": issue.block_num, "tx": issue.tx_id},
            )
        if issues:
            self.store.record_issues(issues)
        self.sink.publish(operations)
        self._pending_blocks.update(op.block_num for op in operations if op.status == PENDING)
        self._send_confirmation(solid)
        # The node's head is at least the last block it gave; a short answer means it is exactly that.
        head = max(self.progress.head, end)
        recent = [(b.number, b.block_id, b.parent_hash) for b in blocks if b.number > solid - RECENT_MARGIN]
        self.store.save_checkpoint(
            end,
            blocks[-1].block_id,
            head,
            solid,
            recent,
            operations,
            block_time_ms=blocks[-1].timestamp_ms,
            block_times=[(b.number, b.timestamp_ms) for b in blocks],
        )
        self.progress.checkpoint, self.progress.head = end, head
        self.progress.checkpoint_time_ms = blocks[-1].timestamp_ms
        self._last_id = blocks[-1].block_id
        self.progress.blocks += len(blocks)
        self.progress.operations += len(operations)
        self.progress.issues += len(issues)
        self._report(end, head)
        caught_up = len(blocks) < min(self.batch_blocks, MAX_BLOCKS_PER_REQUEST)
        if caught_up:
            self._timing.at_head(blocks[-1].timestamp_ms)
        return caught_up

    def _check_empty_probes(self, checkpoint: int) -> bool:
        """Now and then, when probes keep finding nothing, ask the head's header: a node that
        answers `{}` for blocks it has (a lagging or broken backend) is then said so, and retried
        with backoff, instead of looking like a quiet chain. A node whose head is below the
        checkpoint (resynced, another network, a balancer switched to a lagging node) has nothing
        to give until it passes it: that is reported (True), not waited out in silence. The head is
        asked at once on a term's first empty probe, and every probe while the node is behind."""
        self._empty_probes += 1
        first = self.state.name == STARTING
        if self._empty_probes % EMPTY_PROBES_BEFORE_HEAD_CHECK and not first and self.state.name != NODE_BEHIND:
            return False
        head = self.adapter.head_number()
        if head > checkpoint:
            raise ChainMoved(f"the node answered no block from {checkpoint + 1} though its head is {head}")
        if head < checkpoint:
            self._node_behind(head, checkpoint)
            return True
        return False

    def _node_behind(self, head: int, checkpoint: int) -> None:
        behind = checkpoint - head
        self.progress.head = head
        self._behind_now = True
        if self.state.name != NODE_BEHIND or self.state.behind_by != behind:
            since = self.state.since_ms if self.state.name == NODE_BEHIND else _now_ms()
            detail = f"node behind the checkpoint by {behind} blocks (node head {head}, checkpoint {checkpoint})"
            self.state = State(NODE_BEHIND, detail, since, behind_by=behind)
        now = time.monotonic()
        if now - self._behind_logged >= NODE_BEHIND_LOG_SECONDS:
            self._behind_logged = now
            log.error(
                "node behind the checkpoint by %d blocks: the node's head is %d, the checkpoint %d; nothing is "
                "read until the node passes the checkpoint (a resynced or lagging node, or a node of another "
                "network)",
                behind,
                head,
                checkpoint,
                extra={"block": checkpoint, "node_head": head, "behind_by": behind},
            )

    def _set_state(self, name: str, detail: str) -> None:
        if self.state.name == NODE_BEHIND and name != NODE_BEHIND:
            self._behind_logged = float("-inf")
            log.info("the node is no longer behind the checkpoint (it was for %.0f s); %s", self._state_age(), detail)
        since = self.state.since_ms if self.state.name == name else _now_ms()
        self.state = State(name, detail, since)

    def _state_age(self) -> float:
        return max(0.0, (_now_ms() - self.state.since_ms) / 1000)

    def idle_wait(self) -> float:
        """Seconds to wait at the head before the next probe (see SlotTiming); a block's time while
        the node is behind the checkpoint (it cannot gain more than a block per slot)."""
        if self.state.name == NODE_BEHIND:
            return max(self.poll_interval, BLOCK_INTERVAL_MS / 1000)
        return self._timing.wait(self.poll_interval)

    # -- helpers -------------------------------------------------------------------------------

    def _maybe_repair(self) -> None:
        # Between cycles, in this thread: only the active listener repairs, and never while it
        # is half-way through a batch.
        now = time.monotonic()
        if self.repair is None or now - self._repaired_at < self.repair_interval:
            return
        self._repaired_at = now
        self.repair()

    def _checkpoint(self) -> int:
        if self.progress.checkpoint >= 0:
            return self.progress.checkpoint
        stored = self.store.load_checkpoint()
        if stored is not None:
            checkpoint, self._last_id = stored
            self._inherited = checkpoint
            if self.start_block is not None:
                log.info("checkpoint %s found; START_BLOCK %s ignored", checkpoint, self.start_block)
        elif self.start_block is not None:
            checkpoint = self.start_block - 1
        else:
            # The only time the head number is asked for on its own (a header, not a block).
            checkpoint = self.adapter.head_number() - 1
        log.info("starting after block %s", checkpoint)
        self.progress.checkpoint = checkpoint
        return checkpoint

    def _solid(self, checkpoint: int, idle: bool = False) -> int:
        """The solidified head, asked for when it can matter, not every cycle.

        It is asked once per `solid_every` blocks (health and the chain_state row), and when a
        record this streamer sent as pending (or an earlier one may have: the blocks up to the
        stored checkpoint it started from) has become confirmable by the last known distance
        between head and solid head (about 19 blocks): pool operations are a small share of blocks,
        so that costs little (at most one request per solid_every / 2 blocks while blocks come,
        once when the chain goes quiet), and a confirmation comes at most that many blocks after
        the chain's. Never twice for one checkpoint: while the chain stands still nothing can
        solidify."""
        lag = self._solid_lag
        moved = self._solid_at is None or checkpoint != self._solid_at
        due = self._solid_at is None or abs(checkpoint - self._solid_at) >= self.solid_every
        confirmable = bool(self._pending_blocks) and min(self._pending_blocks) <= checkpoint - lag
        # Several records solidifying a few blocks apart are confirmed by one request.
        # (When the chain has gone quiet, at once: nothing else would come to confirm them.)
        spaced = idle or self._solid_at is None or abs(checkpoint - self._solid_at) >= max(1, self.solid_every // 2)
        if moved and (due or (confirmable and spaced)):
            self._solid_known = self.adapter.solid_number()
            self._solid_at = checkpoint
            if self._solid_known >= 0:
                self._solid_lag = max(0, checkpoint - self._solid_known)
                if self._inherited is not None:
                    # Untracked, the records an earlier term or process sent pending waited for
                    # the next due ask: up to solid_every blocks, and for ever on a chain that
                    # stopped before it (nothing else confirms them without the lifecycle job).
                    self._pending_blocks.update(range(self._solid_known + 1, self._inherited + 1))
                    self._inherited = None
            self._pending_blocks = {b for b in self._pending_blocks if b > self._solid_known}
            self.progress.solid = self._solid_known
        return self._solid_known

    def _tracked_accounts(self) -> frozenset[str]:
        # Re-read now and then, so accounts added with the CLI are picked up without a restart.
        now = time.monotonic()
        if now - self._tracked_at >= self.tracked_refresh_seconds:
            tracked = self.store.tracked()
            if tracked != self._tracked:
                log.info("tracking %d pool account(s)", len(tracked))
            self._tracked, self._tracked_at = tracked, now
        return self._tracked

    def _send_confirmation(self, solid: int) -> None:
        if solid > self._confirmed_sent:
            # Stored before it is sent, so a broker that loses the message loses no solidified head.
            self.store.note_solid(solid)
            self.sink.confirm(solid)
            self._confirmed_sent = solid

    def _links(self, blocks: list[BlockParse]) -> bool:
        """True if the batch extends the checkpoint's block; False if that block left the chain."""
        if self._last_id is not None and blocks[0].parent_hash != self._last_id:
            return False
        for previous, block in zip(blocks, blocks[1:], strict=False):
            if block.parent_hash != previous.block_id:
                # The node switched branches between two blocks of this very batch: fetch again.
                raise ChainMoved(f"block {block.number} does not follow block {previous.number}")
        return True

    def _roll_back(self, checkpoint: int, solid: int) -> None:
        """A fork: walk back to the common ancestor, orphan what left the chain, resume from there."""
        ancestor = checkpoint
        ancestor_id = self._last_id
        # The walk may go below the solidified head the node reports now: blocks this listener
        # read while they were not solid yet can have been replaced before the head moved on (a
        # listener that polls after a burst of blocks sees the solid head jump past the fork). It
        # stops where the recent block ids end (kept down to 100 below the solid head).
        walked: list[tuple[int, str]] = []  # (height, our block) where the node has another block
        while ancestor > max(solid - RECENT_MARGIN, 0):
            ours = self.store.recent_block_id(ancestor)
            theirs = self.adapter.block_id(ancestor)
            if ours is None or ours == theirs:
                ancestor_id = theirs
                break
            walked.append((ancestor, ours))
            ancestor -= 1
        else:
            ancestor_id = self.adapter.block_id(ancestor)
        # Only blocks this walk saw replaced leave the chain; the store orphans them (and moves the
        # checkpoint back) in one fenced transaction, and only then are workers told to orphan
        # their records: a term that is over sends no revert.
        replaced = [(num, block_id) for num, block_id in walked if num > ancestor]
        gone = self.store.rollback(ancestor, ancestor_id, replaced)
        if gone:
            self.sink.revert(gone)
        self.progress.checkpoint, self._last_id = ancestor, ancestor_id
        self.progress.checkpoint_time_ms = None
        self.progress.forks += 1
        log.warning(
            "fork: block %s left the chain; rolled back %d block(s) to %s",
            checkpoint,
            len(gone),
            ancestor,
            extra={"block": checkpoint, "ancestor": ancestor},
        )

    @staticmethod
    def _check_contiguous(blocks: list[BlockParse], first: int, last: int) -> None:
        numbers = [b.number for b in blocks]
        if numbers != list(range(first, last + 1)):
            raise RuntimeError(f"adapter returned blocks {numbers[:3]}... for {first}..{last}")

    def _report(self, checkpoint: int, head: int) -> None:
        now = time.monotonic()
        behind = head - checkpoint
        # While catching up, a line every few seconds; at the head, one a minute is enough.
        if now - self._last_progress < (self.progress_seconds if behind > 0 else 60.0):
            return
        elapsed = max(now - self.progress.started, 1e-9)
        rate = self.progress.blocks / elapsed
        eta = f"{behind / rate:.0f}s" if rate > 0 and behind > 0 else "-"
        log.info(
            "block %s / head %s (%s behind), %.1f blocks/s, %d operations, ETA %s",
            checkpoint,
            head,
            behind,
            rate,
            self.progress.operations,
            eta,
        )
        self._last_progress = now

    def _on_failure(self, exc: Exception) -> None:
        self._failures += 1
        self._set_state(*describe_failure(exc))
        self.progress.errors += 1
        delay = backoff(
            self._failures, base=RETRY_BASE, cap=self.max_backoff, jitter=(0.8, 1.2), at_least=announced_wait(exc)
        )
        # Log a burst once, then only every tenth failure, so a long outage does not flood the log.
        if self._failures == 1 or self._failures % 10 == 0:
            log.warning(
                "cycle failed (%d in a row): %s: %s; retrying in %.1fs from block %s",
                self._failures,
                exc.__class__.__name__,
                exc,
                delay,
                self.progress.checkpoint + 1,
            )
        self._sleep(delay)
