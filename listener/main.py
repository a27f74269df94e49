"""`python -m listener`: the listener process (a thin entry point over Streamer)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import psycopg

from ledger.accounts import add_accounts
from ledger.config import load_settings
from ledger.logs import setup_logging
from ledger.queue import create_broker
from ledger.tron_node import TronNode
from listener.adapter import NodeAdapter
from listener.sink import BrokerSink
from listener.store import PgStore
from listener.streamer import Streamer

log = logging.getLogger("listener")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m listener",
        description=(
            "Poll a java-tron HTTP API (TRON_NODE_URL) from the checkpoint, enqueue one message per "
            "Stake 2.0 operation of the tracked pool accounts, then advance the checkpoint. "
            "Configuration comes from the environment (see README)."
        ),
    )
    parser.add_argument("--start-block", type=int, default=None, help="first block when no checkpoint exists")
    args = parser.parse_args(argv)

    settings = load_settings()
    setup_logging(settings.log_level)
    if not settings.tron_node_url:
        parser.error("TRON_NODE_URL is not set")
    if settings.pool_accounts:
        with psycopg.connect(settings.database_url) as conn:
            add_accounts(conn, list(settings.pool_accounts), label="POOL_ACCOUNTS")

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    node = TronNode(
        settings.tron_node_url,
        solidity_url=settings.solidity_url,
        api_key=settings.tron_api_key,
        timeout=settings.tron_timeout_seconds,
        requests_per_second=settings.tron_requests_per_second,
    )
    broker = create_broker(settings.redis_url)
    store = PgStore(settings.database_url)
    streamer = Streamer(
        NodeAdapter(node),
        store,
        BrokerSink(broker, settings.queue_name),
        start_block=args.start_block if args.start_block is not None else settings.start_block,
        batch_blocks=settings.listener_batch_blocks,
        poll_interval=settings.poll_interval,
        stop=stop,
    )
    log.info("listener started: node %s, queue %s", settings.tron_node_url, settings.queue_name)
    try:
        streamer.run()
    finally:
        store.close()
        node.close()
        broker.close()
    log.info("listener stopped at block %s", streamer.progress.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
