"""`python -m listener`: the listener process, and `python -m listener backfill` for past ranges.

The listener runs as active or standby (ledger/coordination/lease.py): start as many as you like, exactly one
indexes at a time. With TRON_WS_URL set, a WebSocket block feed wakes it as soon as a block is
announced (listener/wakeup.py); polling from the checkpoint stays the source of truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import cast

import dramatiq
import psycopg

from ledger.chain.address import AddressError, to_base58
from ledger.chain.node import BACKFILL, INGEST, NodeUnavailable, TronNode, node_from_settings
from ledger.chain.snapshot import mark_history, opening_gap_start, snapshot_new_accounts
from ledger.config import Settings, load_settings
from ledger.coordination.budget import Priority
from ledger.coordination.lease import (
    CheckpointFenced,
    FencedStore,
    Leader,
    Lease,
    LeaseTiming,
    Term,
    default_holder,
    held,
    holder_session_options,
)
from ledger.coordination.queue import (
    BrokerNotDurable,
    BrokerSink,
    background_queue,
    check_broker_durability,
    create_broker,
)
from ledger.ops.logs import setup_logging
from ledger.ops.metrics import Counters, Flusher, metrics_client
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.accounts import add_accounts, tracked_addresses
from listener.adapter import NodeAdapter
from listener.backfill import (
    Backfill,
    BackfillError,
    BackfillStore,
    checkpoint_name,
    first_block_since,
    parse_since,
)
from listener.heartbeat import Beat, Heartbeat
from listener.history import AccountHistory, history_checkpoint_name
from listener.repair import repair_once
from listener.store import PgStore
from listener.streamer import Streamer
from listener.wakeup import WakeupFeed

log = logging.getLogger("listener")

# The running listener re-reads pool_accounts every 10 s (Streamer.tracked_refresh_seconds); an
# open-ended backfill after --add-account follows the head for twice that, so no block falls
# between the backfill's end and the moment the listener tracks the new account.
ADD_ACCOUNT_SETTLE_SECONDS = 20.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m listener",
        description=(
            "Poll a java-tron HTTP API (TRON_NODE_URL) from the checkpoint, enqueue one message per "
            "Stake 2.0 operation of the tracked pool accounts, then advance the checkpoint. Several may "
            "run: one is active, the others wait on a PostgreSQL lease and take over when it goes away. "
            "Configuration comes from the environment (see README)."
        ),
    )
    parser.add_argument("--start-block", type=int, default=None, help="first block when no checkpoint exists")
    sub = parser.add_subparsers(dest="command", metavar="{backfill,repair}")
    rp = sub.add_parser(
        "repair",
        help="one accounting pass now: re-enqueue operations missing longer than the grace period",
        description=(
            "Drop recorded operations that have landed in PostgreSQL, move the persisted watermark, and "
            "enqueue again those missing for longer than --grace seconds (default REPAIR_GRACE_SECONDS). "
            "The active listener does this every few seconds by itself; this is for operators and scripts."
        ),
    )
    rp.add_argument("--grace", type=float, default=None, metavar="SECONDS", help="0: re-send everything missing")
    bf = sub.add_parser(
        "backfill",
        help="index a past block range for some pool accounts (resumable)",
        description=(
            "Index blocks A..B (or from a date) for the given pool accounts through the listener's queue. "
            "Progress goes to stderr and to a checkpoint row of its own: run the same command again to resume. "
            "Without --to-block the range ends at the head. Batch size: LISTENER_BATCH_BLOCKS."
        ),
    )
    start = bf.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-block", type=int, metavar="A", help="first block of the range")
    start.add_argument(
        "--since", metavar="DATE", help="first block at or after this date/time, UTC unless given (2025-01-01[T12:00])"
    )
    bf.add_argument("--to-block", type=int, metavar="B", help="last block of the range (default: the head)")
    bf.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="T...",
        help="account to backfill (repeatable; default: every pool account)",
    )
    bf.add_argument("--add-account", action="store_true", help="add the --account(s) to pool_accounts first")
    bf.add_argument(
        "--scan-blocks",
        action="store_true",
        help="with --since: scan every block since DATE (a self-run node) instead of reading the accounts' "
        "history from TronGrid's account index (/v1/accounts/{a}/transactions)",
    )
    bf.add_argument("--label", default=None, help="label for accounts added with --add-account")
    bf.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="REQ_PER_S",
        help="a cap for this run alone, under the shared budget (TRON_REQUESTS_PER_SECOND for all processes)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, secrets=(settings.tron_api_key,))
    if not settings.tron_node_url:
        parser.error("TRON_NODE_URL is not set")
    if args.command == "backfill":
        return run_backfill(args, settings)
    if args.command == "repair":
        result = repair_once(settings, grace_seconds=args.grace)
        print(json.dumps(asdict(result)))
        return 0
    return run_listener(args, settings)


def _node(
    settings: Settings,
    priority: Priority,
    rate: float | None = None,
    counters: Counters | None = None,
    caller: str = BACKFILL,
) -> TronNode:
    return node_from_settings(settings, rate, counters=counters, priority=priority, caller=caller)


# -- the listener ------------------------------------------------------------------------------


def run_listener(args: argparse.Namespace, settings: Settings) -> int:
    start_block = args.start_block if args.start_block is not None else settings.start_block
    added: list[str] = []
    if settings.pool_accounts:
        with psycopg.connect(settings.database_url) as conn:
            added = [a.address for a in add_accounts(conn, list(settings.pool_accounts), label="POOL_ACCOUNTS")]

    wake = threading.Event()
    holder = default_holder()
    lease = Lease(settings.database_url, MAIN_CHECKPOINT, holder, LeaseTiming.of(settings))
    leader = Leader(lease, stop=threading.Event(), wake=wake)

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the current batch", signum)
        leader.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    broker = create_broker(settings.effective_broker_url)
    try:
        check_broker_durability(broker, require=settings.broker_require_persistence)
    except BrokerNotDurable as exc:
        log.error("%s", exc)
        broker.close()
        return 2
    counters = Counters()
    # Following the head is the live path: its requests may use the budget's reserve.
    node = _node(settings, Priority.LIVE, counters=counters, caller=INGEST)
    flusher = Flusher(counters, metrics_client(settings.redis_url)).start()
    sink = BrokerSink(broker, settings.queue_name)
    adapter = NodeAdapter(node)  # one per process: it keeps a fetch thread pool
    feed = WakeupFeed(settings.tron_ws_url, wake) if settings.tron_ws_url else None
    last_checkpoint: list[int] = []
    streamers: list[Streamer] = []  # the current term's, for the heartbeat
    counted = [0, 0]  # blocks, operations already added to the counters

    def snapshot() -> Beat:
        if not (leader.active and streamers):
            return Beat(role="standby")
        progress = streamers[-1].progress
        counters.inc("ledger_listener_blocks_total", value=progress.blocks - counted[0])
        counters.inc("ledger_listener_operations_total", value=progress.operations - counted[1])
        counted[:] = [progress.blocks, progress.operations]
        head = adapter.head_seen()
        checkpoint_time = progress.checkpoint_time_ms
        if head is not None and checkpoint_time is None and progress.checkpoint == head[0]:
            checkpoint_time = head[1]  # at the head without a batch yet (e.g. just started)
        state = streamers[-1].state
        return Beat(
            role="active",
            term=leader.term.number if leader.term is not None else None,
            head_block=head[0] if head else None,
            head_time_ms=head[1] if head else None,
            head_seen_ms=head[2] if head else None,
            processed_block=progress.checkpoint if progress.checkpoint >= 0 else None,
            processed_time_ms=checkpoint_time,
            state=state.name,
            state_detail=state.detail,
            state_since_ms=state.since_ms,
        )

    heartbeat = Heartbeat(
        settings.database_url,
        name=MAIN_CHECKPOINT,
        holder=holder,
        interval=settings.listener_heartbeat_seconds,
        snapshot=snapshot,
    )

    def active(term: Term) -> None:
        # A fresh store and streamer per term: the checkpoint is re-read from PostgreSQL, since
        # another listener may have advanced it while this one was standby.
        store = PgStore(
            settings.database_url,
            name=MAIN_CHECKPOINT,
            term=term.number,
            session_options=holder_session_options(LeaseTiming.of(settings)),
        )
        fenced = FencedStore(store, term)
        # Every message of the term carries it, and none goes once the term may no longer act.
        term_sink = sink.for_term(term.fence, term.ensure)
        streamer = Streamer(
            adapter,
            fenced,
            term_sink,
            start_block=_take_openings(settings, node, added, start_block),
            batch_blocks=settings.listener_batch_blocks,
            poll_interval=settings.poll_interval,
            stop=term.stop,
            wake=wake,
            repair=lambda: fenced.repair(term_sink, settings.repair_grace_seconds),
            # Often enough that the watermark in /health/ready is fresh and a loss is re-sent
            # soon after its grace period; one pass costs a few small queries.
            repair_interval=min(5.0, settings.repair_grace_seconds / 2),
            solid_every=settings.listener_solid_every_blocks,
            push=feed is not None,
        )
        streamers[:] = [streamer]
        counted[:] = [0, 0]
        try:
            streamer.run()
        finally:
            store.close()
            last_checkpoint.append(streamer.progress.checkpoint)

    if feed is not None:
        feed.start()
    heartbeat.start()
    log.info(
        "listener started: node %s, queue %s, wake-up feed %s",
        settings.tron_node_url,
        settings.queue_name,
        settings.tron_ws_url or "off (polling only)",
    )
    try:
        leader.run(active)
    finally:
        if feed is not None:
            feed.close()
        heartbeat.stop()
        lease.disconnect()
        flusher.stop()
        adapter.close()
        node.close()
        broker.close()
    log.info("listener stopped at block %s", last_checkpoint[-1] if last_checkpoint else "- (never active)")
    return 0


def _take_openings(settings: Settings, node: TronNode, accounts: list[str], start_block: int | None) -> int | None:
    """The active listener reads the opening position of each of `accounts` that has none (an
    account's stake predates the ledger; ledger.chain.snapshot), and returns the block to start from on
    a first start: right after the oldest snapshot, so no block between it and the head is skipped
    (with a checkpoint the streamer goes on from it and ignores this)."""
    if not accounts:
        return start_block
    with psycopg.connect(settings.database_url) as conn:
        snapshot_new_accounts(conn, node, accounts)
        first = opening_gap_start(conn, accounts)
    if first is not None and (start_block is None or first < start_block):
        return first
    return start_block


# -- backfill ----------------------------------------------------------------------------------


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
    node = _node(settings, Priority.BACKGROUND, args.rate)
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


if __name__ == "__main__":
    sys.exit(main())
