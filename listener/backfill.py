"""`python -m listener backfill`: index the past for some pool accounts.

`run_backfill` checks the accounts (adding them with --add-account), then indexes their past: by
default each account's history from TronGrid's account index (listener/history.py) and the blocks
since the solidified head that history was read up to; with --scan-blocks or --from-block, a block
range (`Backfill`). Each part holds the lease of its own checkpoint row while it runs and sends on
the background queue, fenced by its term.

The blocks go through the same NodeAdapter (getblockbylimitnext batches, TransactionInfo where
amounts live only there) and the same BrokerSink (the listener's messages, on the background
queue) as live blocks, so workers cannot tell a backfilled record from a live one, and the two may
overlap freely (workers upsert by chain identity).

Progress is kept in its own `listener_checkpoint` row, `backfill:<from>-<to>:<accounts hash>`, so
rerunning the same command resumes where an interrupted one stopped. That row is written with its
own statement, not `PgStore.save_checkpoint`: the main checkpoint's save also moves `chain_state`
and the fork-check window, which a walk through old blocks must not touch. Two runs of the same
backfill exclude each other through the same lease (advisory lock + fencing term) as the listener.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import dramatiq
import psycopg

from ledger.chain.address import AddressError, to_base58
from ledger.chain.node import BACKFILL, NodeUnavailable, TronNode, node_from_settings
from ledger.chain.parser import BlockParse, ParseIssue
from ledger.chain.snapshot import mark_history
from ledger.clocks import Clock
from ledger.config import Settings
from ledger.coordination.backoff import announced_wait, backoff
from ledger.coordination.budget import Priority
from ledger.coordination.lease import (
    CheckpointFenced,
    FencedStore,
    Lease,
    LeaseTiming,
    Term,
    held,
    holder_session_options,
)
from ledger.coordination.queue import BrokerSink, Sink, background_queue, create_broker
from ledger.ops.logs import ProgressLine
from ledger.store.accounts import add_accounts, tracked_addresses
from listener.adapter import ChainAdapter, NodeAdapter
from listener.history import AccountHistory, history_checkpoint_name
from listener.store import BackfillStore
from listener.streamer import RETRY_BASE, RETRY_CAP

log = logging.getLogger(__name__)

# The running listener re-reads pool_accounts every 10 s (Streamer.tracked_refresh_seconds); an
# open-ended backfill after --add-account follows the head for twice that, so no block falls
# between the backfill's end and the moment the listener tracks the new account.
ADD_ACCOUNT_SETTLE_SECONDS = 20.0


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
        clock: Clock = time.monotonic,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.sink = sink
        self.tracked = frozenset(accounts)
        self.start = start
        self.end = end
        self.batch_blocks = max(1, batch_blocks)
        # Open range after --add-account: keep following the head until this time (on `clock`), by
        # when the running listener has re-read pool_accounts and tracks the new account itself.
        self.settle_until = settle_until
        self.clock = clock
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
        started = self.clock()
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
                    if self.end is None and self.clock() < self.settle_until:
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
        elapsed = max(self.clock() - started, 1e-9)
        rate = result.blocks / elapsed
        left = max(end - result.last, 0)
        total = max(end - self.start + 1, 1)
        eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
        return (
            f"backfill block {result.last}/{end} ({100 * (result.last - self.start + 1) / total:.1f}%), "
            f"{rate:.0f} blocks/s, {result.operations} ops, ETA {eta}"
        )


# -- the command -------------------------------------------------------------------------------


def run_backfill(args: argparse.Namespace, settings: Settings) -> int:
    # One INFO line per HTTP request would bury the progress line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return _backfill(args, settings)
    except BackfillError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    if args.rate is not None and args.rate < 0:
        raise BackfillError("--rate must be >= 0")
    if args.add_account and not args.account:
        raise BackfillError("--add-account needs at least one --account")
    try:
        accounts = sorted({to_base58(a) for a in args.account})
    except AddressError as exc:
        raise BackfillError(str(exc)) from None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if args.add_account:
            add_accounts(conn, accounts, label=args.label or "backfill")
        pool = tracked_addresses(conn)
    accounts = accounts or sorted(pool)
    if not accounts:
        raise BackfillError("no pool accounts: pass --account T... --add-account")
    unknown = [a for a in accounts if a not in pool]
    if unknown:
        # The API only serves pool accounts: records of others would be stored and never shown.
        raise BackfillError(f"not pool accounts: {', '.join(unknown)} (add them with --add-account)")

    # A backfill can wait: it must not slow the running listener's requests (ledger/coordination/budget.py).
    node = node_from_settings(settings, args.rate, priority=Priority.BACKGROUND, caller=BACKFILL)
    adapter = NodeAdapter(node)
    try:
        head = adapter.head_number()
        if args.from_block is not None:
            start = args.from_block
        elif not args.scan_blocks:
            # The accounts' history from the account index, then the blocks since the solidified
            # head it was read up to, as a block range (so nothing above it is missed).
            solid = node.solid_block_number()
            for account in accounts:
                _account_history(settings, node, account, parse_since(args.since), frozenset(accounts))
            start = max(solid + 1, 0)
        else:
            start = first_block_since(node, parse_since(args.since), head)
        if start < 0 or (args.to_block is not None and args.to_block < start):
            raise BackfillError(f"empty range {start}..{args.to_block}")
        if args.to_block is not None and args.to_block > head:
            raise BackfillError(f"--to-block {args.to_block} is past the head {head}")
        return _run_range(args, settings, node, adapter, accounts, start)
    finally:
        adapter.close()
        node.close()


@contextmanager
def _claimed(settings: Settings, name: str) -> Iterator[tuple[BackfillStore, dramatiq.Broker, Term]]:
    """The lease on the checkpoint row `name` (kept renewed while the run lasts), its store (fenced
    by the lease's term), a broker and the term, all released when the run ends; BackfillError if
    another run holds the lease."""
    lease = Lease(settings.database_url, name, timing=LeaseTiming.of(settings))
    with held(lease) as term:
        if term is None:
            info = lease.holder_info()
            lease.disconnect()
            raise BackfillError(f"{name} is already running ({info})")
        store = BackfillStore(
            settings.database_url, name=name, term=term.number, session_options=holder_session_options(lease.timing)
        )
        broker = create_broker(settings.effective_broker_url)
        try:
            yield cast(BackfillStore, FencedStore(store, term)), broker, term  # FencedStore delegates every call
        finally:
            store.close()
            broker.close()


def _account_history(settings: Settings, node: TronNode, account: str, since_ms: int, tracked: frozenset[str]) -> None:
    with _claimed(settings, history_checkpoint_name(account, since_ms)) as (store, broker, term):
        # Live first, as block-range backfills; fenced by the run's term.
        sink = BrokerSink(broker, background_queue(settings.queue_name), fence=term.fence, guard=term.ensure)
        try:
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                # Positions from the whole history since DATE, not from a snapshot of the chain.
                mark_history(conn, account)
            result = AccountHistory(node, sink, store, account=account, since_ms=since_ms, tracked=tracked).run()
        except NodeUnavailable as exc:
            raise BackfillError(f"history of {account}: {exc}") from None
        except CheckpointFenced as exc:
            raise BackfillError(f"another run took this history over: {exc}") from None
        finally:
            sink.close()
    print(
        f"history of {account}: {result.pages} page(s), {result.records} record(s), {result.operations} operation(s)",
        file=sys.stderr,
    )


def _run_range(
    args: argparse.Namespace, settings: Settings, node: TronNode, adapter: NodeAdapter, accounts: list[str], start: int
) -> int:
    name = checkpoint_name(start, args.to_block, accounts)
    with _claimed(settings, name) as (store, broker, term):
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping after the current batch", signum)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        settle = args.add_account and args.to_block is None
        rates = [r for r in (args.rate, settings.tron_requests_per_second) if r]
        rate = min(rates) if rates else 0.0
        log.info(
            "backfill %s: blocks %d..%s for %d account(s), %s",
            name,
            start,
            "head" if args.to_block is None else args.to_block,
            len(accounts),
            f"{rate:g} requests/s" if rate else "no request limit",
        )
        backfill = Backfill(
            adapter,
            store,
            # Live first (see ledger.coordination.queue); fenced by the run's term.
            BrokerSink(broker, background_queue(settings.queue_name), fence=term.fence, guard=term.ensure),
            accounts=accounts,
            start=start,
            end=args.to_block,
            batch_blocks=settings.listener_batch_blocks,
            settle_until=time.monotonic() + ADD_ACCOUNT_SETTLE_SECONDS if settle else 0.0,
            poll_interval=settings.poll_interval,
            stop=stop,
        )
        try:
            result = backfill.run()
        except CheckpointFenced as exc:
            raise BackfillError(f"another run took this backfill over: {exc}") from None
    if not result.completed:
        print(f"backfill interrupted after block {result.last}; run the same command to resume", file=sys.stderr)
        return 130
    print(
        f"backfill complete: blocks {start}..{result.last}, {result.blocks} block(s) and "
        f"{result.operations} operation(s) this run",
        file=sys.stderr,
    )
    return 0
