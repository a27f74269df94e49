"""`python -m listener`: the listener process; `backfill` (listener/backfill.py) and `repair`
(listener/repair.py) are dispatched from here.

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
from dataclasses import asdict

import psycopg

from ledger.chain.node import INGEST, TronNode, node_from_settings
from ledger.chain.snapshot import opening_gap_start, snapshot_new_accounts
from ledger.config import Settings, load_settings
from ledger.coordination.budget import Priority
from ledger.coordination.lease import (
    FencedStore,
    Leader,
    Lease,
    LeaseTiming,
    Term,
    default_holder,
    holder_session_options,
)
from ledger.coordination.queue import (
    BrokerNotDurable,
    BrokerSink,
    check_broker_durability,
    create_broker,
)
from ledger.ops.logs import setup_logging
from ledger.ops.metrics import Counters, Flusher, metrics_client
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.accounts import add_accounts
from listener.adapter import NodeAdapter
from listener.backfill import run_backfill
from listener.heartbeat import Beat, Heartbeat
from listener.repair import repair_once
from listener.store import PgStore
from listener.streamer import Streamer
from listener.wakeup import WakeupFeed

log = logging.getLogger("listener")


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
    node = node_from_settings(settings, counters=counters, priority=Priority.LIVE, caller=INGEST)
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


if __name__ == "__main__":
    sys.exit(main())
