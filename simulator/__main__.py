"""`python -m simulator`: generate history, serve, produce live blocks, print the READY line."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .account_api import AccountApi
from .api import NodeApi
from .config import parse_config
from .contract_stakes import ContractStakeApi
from .control import ControlApi
from .faults import FaultInjector
from .feed import BlockFeed
from .node import Producer, SimNode
from .render import Renderer
from .requests import HiddenTransactions, RequestCounter, RequestsApi
from .server import SimServer
from .trongrid import TronGridApi


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes SystemExit so serve_forever unwinds through the finally below.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    node = SimNode(config)
    started = time.monotonic()
    node.generate_history(config.history_blocks)
    if node.store.head() is None and not config.paused:
        node.produce(1)  # a running node always has a head block; do not make clients wait for it
    if config.history_blocks:
        elapsed = time.monotonic() - started
        print(f"simulator: generated {config.history_blocks} history blocks in {elapsed:.1f} s", file=sys.stderr)
    print(f"simulator: tracked accounts {','.join(config.accounts)}", file=sys.stderr, flush=True)

    hidden = HiddenTransactions(node.store, config.tracked_hex, config.hide_rate)
    renderer = Renderer(node.book, cache_bytes=config.render_cache_mb * 1024 * 1024, hidden=hidden.is_hidden)
    if config.prerender:
        started = time.monotonic()
        head = node.store.head()
        history = node.store.blocks(node.store.start_block, head.number + 1) if head is not None else []
        rendered = renderer.prerender(history)
        elapsed = time.monotonic() - started
        print(f"simulator: prerendered {rendered / 2**20:,.0f} MB of replies in {elapsed:.1f} s", file=sys.stderr)
    counter = RequestCounter()
    # Listeners are added after the history, which no client can have watched being made.
    node.store.add_listener(lambda removed, added, heights: renderer.forget(removed))
    feed = BlockFeed(config.solid_lag, node.store.heights().head, config.ws_drop_every)
    node.store.add_listener(feed.on_chain)
    faults = FaultInjector(
        node.store,
        renderer,
        rate=config.fault_rate,
        every=config.fault_every,
        kinds=config.faults,
        suspend_seconds=config.suspend_seconds,
        timeout_seconds=config.timeout_seconds,
        seed=config.seed,
    )
    accounts = AccountApi(node.store, node.view, node.book)
    trongrid = TronGridApi(node.store, node.view, renderer, accounts)
    server = SimServer(
        (config.host, config.port),
        # The /sim/requests and /sim/hidden routes go before ControlApi, which answers 404 for any /sim/ path.
        [
            NodeApi(node.store, renderer).handle,
            accounts.handle,
            trongrid.handle,
            RequestsApi(counter, hidden).handle,
            ContractStakeApi(node.contract_stakes, lambda: node.submit([]), lambda: node.store.heights().head).handle,
            ControlApi(node, faults, feed).handle,
        ],
        counter=counter,
        response_filter=faults,
        log_requests=config.log_requests,
        feed=feed,
    )
    host, port = str(server.server_address[0]), int(server.server_address[1])
    producer = Producer(node, config.block_interval)
    signal.signal(signal.SIGTERM, _raise_exit)
    producer.start()
    # Harnesses wait for exactly this line; the port is the real one when --port 0 was given.
    print(f"SIMULATOR READY http://{host}:{port} accounts={','.join(config.accounts)}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        producer.stop()
        feed.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
