"""Live first: freshness of live records with and without a big backfill pending, side by side.

    .venv/bin/python -m bench.live_first --backlog 20000 --duration 20 --shared     # CI-sized
    .venv/bin/python -m bench.live_first --backlog 1000000 --duration 120           # the recorded run

One simulator (3-s blocks) feeds complete pipelines at once, each with its own database, Redis DBs,
listener (with the WebSocket wake-up), worker as the Procfile runs it (2 processes x 4 threads)
and web server, all measured over the same window, so the machine's load (shared, noisy) is the
same for each:

- `reference`: no backfill;
- `background`: `--backlog` operations of the pool accounts' history sent to the background queue,
  where `listener backfill` sends them (ledger.coordination.queue), while we measure;
- `shared` (with `--shared`): the same backlog on the live queue, as with a single queue: the live
  records wait behind it, so this shows what the background queue saves.

Freshness is block timestamp -> first seen on the API's first pages (as bench/freshness.py), over
live records only, while the backlog is enqueued (the producer's load, as a running backfill adds
it) and for `--duration` seconds after. The backlog must still be pending at the end for the run to
count. Target: background p99 <= reference p99 + 1 s. `--split` gives each pipeline one live-only
and one background-only worker process instead (the same budget).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import threading
import time
import uuid

import httpx
import redis

from bench.freshness import Watch, percentile, watch
from harness.procs import Proc, python
from harness.stack import (
    SIM_ACCOUNTS,
    new_ledger,
    settings_env,
    start_listener,
    start_simulator,
    start_web,
    start_worker,
)
from ledger.coordination.queue import BrokerSink, background_queue, create_broker
from ledger.domain import Operation

# name -> (database, broker Redis DB, cache Redis DB, web port offset)
PIPELINES = {
    "reference": ("ledger_bench_live_ref", 10, 11, 0),
    "background": ("ledger_bench_live_bg", 12, 13, 1),
    "shared": ("ledger_bench_live_shared", 8, 9, 2),
}
HISTORY_TIME_MS = 1_600_000_000_000  # September 2020: far below any live block


def history(count: int, seed: str) -> list[Operation]:
    """`count` freezes and delegations of the pool accounts in old blocks (50 a block)."""
    ops = []
    for i in range(count):
        block, tx_index = 1_000 + i // 50, i % 50
        owner = SIM_ACCOUNTS[i % len(SIM_ACCOUNTS)]
        delegate = i % 4 == 3
        ops.append(
            Operation(
                tx_id=hashlib.sha256(f"{seed}/{i}".encode()).hexdigest(),
                op_index=0,
                block_num=block,
                block_id=f"{block:016x}" + "cd" * 24,
                tx_index=tx_index,
                block_time_ms=HISTORY_TIME_MS + block * 3000,
                contract_type="DelegateResourceContract" if delegate else "FreezeBalanceV2Contract",
                kind="delegate" if delegate else "freeze",
                owner_address=owner,
                resource="ENERGY",
                amount=1_000_000 + i,
                receiver_address=SIM_ACCOUNTS[(i + 1) % len(SIM_ACCOUNTS)] if delegate else None,
            )
        )
    return ops


def start_workers(env: dict[str, str], queue: str, split: bool) -> list[Proc]:
    """The same budget either way, 2 processes x 4 threads: both consuming both queues (the
    Procfile), or one process per queue (`--queues`, the split docs/OPERATIONS.md describes)."""
    if not split:
        return [start_worker(env, processes=2, threads=4)]
    procs = []
    for name in (queue, background_queue(queue)):
        argv = python("-m", "dramatiq", "workers.main:setup", "--processes", "1", "--threads", "4", "--queues", name)
        proc = Proc(f"worker {name}", argv, env)
        proc.wait_for(r"worker.*ready", timeout=60)
        procs.append(proc)
    return procs


def start_pipeline(name: str, args: argparse.Namespace, sim_url: str) -> tuple[list[Proc], str, int]:
    database, broker_db, cache_db, offset = PIPELINES[name]
    settings = new_ledger(
        f"postgresql://postgres@127.0.0.1:5432/{database}",
        f"{args.redis}/{broker_db}",
        f"{args.redis}/{cache_db}",
        poll_interval=1.0,
    )
    queue = f"live-first-{name}-{uuid.uuid4().hex[:6]}"
    env = {
        **settings_env(settings),
        "QUEUE_NAME": queue,
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "TRON_NODE_URL": sim_url,
        "TRON_WS_URL": sim_url.replace("http://", "ws://") + "/ws",
    }
    port = args.port + offset
    procs = start_workers(env, queue, args.split)
    procs += [start_listener(env), start_web(env, port)]
    return procs, queue, port


def enqueue_backlog(redis_url: str, queue: str, count: int, took: list[float]) -> None:
    broker = create_broker(redis_url)
    sink = BrokerSink(broker, queue)
    started = time.monotonic()
    try:
        for first in range(0, count, 50_000):  # bounded memory for a big backlog
            sink.publish(history(min(50_000, count - first), f"{queue}-{first}"))
    finally:
        took.append(time.monotonic() - started)
        sink.close()
        broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=20_000, help="backfill operations pending")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured after the enqueue ends")
    parser.add_argument("--block-interval", type=float, default=3.0)
    parser.add_argument("--shared", action="store_true", help="also run a pipeline with the backlog on the live queue")
    parser.add_argument(
        "--split",
        action="store_true",
        help="one live-only and one background-only worker process instead of 2 for both",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server (DBs 8 to 13 are flushed)")
    parser.add_argument("--port", type=int, default=8125, help="first web port (one a pipeline; must be free)")
    args = parser.parse_args()

    names = ["reference", "background"] + (["shared"] if args.shared else [])
    sim, sim_url = start_simulator("--block-interval", str(args.block_interval), "--ops-per-block", "3")
    procs: list[Proc] = [sim]
    seen = {name: Watch() for name in names}
    left: dict[str, int] = {}
    took: dict[str, list[float]] = {name: [] for name in names}
    stop = threading.Event()
    try:
        pipelines = {}
        for name in names:
            started, queue, port = start_pipeline(name, args, sim_url)
            procs += started
            pipelines[name] = (queue, port)
        time.sleep(2 * args.block_interval)  # the listeners reach the head
        floor = httpx.get(f"{sim_url}/sim/status").json()["head"]
        watchers = [
            threading.Thread(
                target=watch,
                args=(f"http://127.0.0.1:{pipelines[n][1]}", SIM_ACCOUNTS, stop, seen[n]),
                kwargs={"floor": floor},  # live records only
            )
            for n in names
        ]
        producers = []
        for name in names[1:]:
            queue = pipelines[name][0]
            target = queue if name == "shared" else background_queue(queue)
            redis_url = f"{args.redis}/{PIPELINES[name][1]}"
            producers.append(
                threading.Thread(target=enqueue_backlog, args=(redis_url, target, args.backlog, took[name]))
            )
        for thread in watchers + producers:
            thread.start()
        for thread in producers:
            thread.join()
        time.sleep(args.duration)
        stop.set()
        for thread in watchers:
            thread.join()
        for name in names[1:]:
            queue = pipelines[name][0]
            target = queue if name == "shared" else background_queue(queue)
            client = redis.Redis.from_url(f"{args.redis}/{PIPELINES[name][1]}")
            left[name] = int(client.hlen(f"dramatiq:{target}.msgs"))
            client.flushdb()
    finally:
        stop.set()
        for proc in reversed(procs):
            proc.stop()
    lags = {name: watched.lags for name, watched in seen.items()}
    window = max((t[0] for t in took.values() if t), default=0.0) + args.duration
    print(
        f"freshness of live records at {args.block_interval:g}-s blocks over {window:.0f}s, backlog "
        f"{args.backlog:,} operations{' (split workers)' if args.split else ''} "
        "(block timestamp -> first seen in the API, seconds):"
    )
    for name in names:
        pending = f"; enqueue {took[name][0]:.0f}s, backlog left at the end {left.get(name, 0):,}" if took[name] else ""
        if not lags[name]:
            print(f"  {name:10s}: no live record seen{pending}")
            continue
        values = lags[name]
        print(
            f"  {name:10s}: {len(values):4d} records, p50 {statistics.median(values):.2f}, "
            f"p99 {percentile(values, 0.99):.2f}, max {max(values):.2f}{pending}"
        )
    if lags["reference"] and lags["background"]:
        ref, bg = percentile(lags["reference"], 0.99), percentile(lags["background"], 0.99)
        verdict = "met" if bg <= ref + 1.0 and left.get("background", 0) > 0 else "MISSED"
        print(f"target background p99 <= reference p99 + 1 s: {bg:.2f} vs {ref + 1.0:.2f}: {verdict}")


if __name__ == "__main__":
    main()
