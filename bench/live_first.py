"""Live first: freshness of live records with and without a big backfill pending, side by side.

    .venv/bin/python -m bench.live_first --backlog 20000 --duration 20        # CI-sized
    .venv/bin/python -m bench.live_first --backlog 1000000 --duration 120     # the recorded run

One pipeline (simulator at 3-s blocks, listener with the WebSocket wake-up, worker as the Procfile
runs it: 2 processes x 4 threads, web) follows the head. Freshness is block timestamp -> first seen
on the API's first pages (as bench/freshness.py), counted over live records only. Phases, in one run:

- `idle`: no backfill;
- `background`: `--backlog` operations of the pool accounts' history waiting on the background
  queue, where `listener backfill` sends them (ledger.queue), draining while we measure;
- `shared` (with `--shared`): the same backlog on the live queue, as before live first: the live
  records wait behind it, so this phase shows what the background queue saves.

`--split` runs the same worker budget as one live-only and one background-only process instead.

A phase measures while its backlog is enqueued (the producer's load, as a running backfill adds
it) and for `--duration` seconds after, while the workers drain it. The backlog must still be
pending at the end for the phase to count. Target: background p99 <= idle p99 + 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import httpx
import redis

from ledger.config import load_settings
from ledger.db import migrate
from ledger.domain import Operation
from ledger.queue import background_queue, create_broker
from listener.sink import BrokerSink
from tests.procs import Proc, python
from tests.stack import (
    SIM_ACCOUNTS,
    Simulator,
    recreate_database,
    settings_env,
    start_listener,
    start_simulator,
    start_web,
    start_worker,
)

DATABASE = "ledger_bench_live_first"
HISTORY_TIME_MS = 1_600_000_000_000  # September 2020: far below any live block


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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


def watch(port: int, floor: int, stop: threading.Event, lags: list[float]) -> None:
    """Note each live record (block > floor) the first time the API shows it."""
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    seen: set[tuple[str, int]] = set()
    first_poll = True
    while not stop.is_set():
        for account in SIM_ACCOUNTS:
            for path in ("/api/stake/records", "/api/delegate/records"):
                body = http.get(path, params={"pool_account_id": account, "limit": 50}).json()
                now_ms = time.time() * 1000
                for row in body.get("data", []):
                    key = (row["tx_id"], row["op_index"])
                    if row["block_num"] <= floor or key in seen:
                        continue
                    seen.add(key)
                    if not first_poll:  # rows already there at the start say nothing about lag
                        block_ms = datetime.fromisoformat(row["block_time"]).timestamp() * 1000
                        lags.append((now_ms - block_ms) / 1000)
        first_poll = False
        stop.wait(0.05)


def measure(port: int, floor: int, duration: float, during: Callable[[], None]) -> list[float]:
    """Freshness while `during` runs (the enqueue), then for `duration` seconds more."""
    lags: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(port, floor, stop, lags))
    thread.start()
    try:
        during()
        time.sleep(duration)
    finally:
        stop.set()
        thread.join()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=20_000, help="backfill operations pending")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of measurement per phase")
    parser.add_argument("--block-interval", type=float, default=3.0)
    parser.add_argument("--shared", action="store_true", help="also measure the backlog on the live queue")
    parser.add_argument(
        "--split",
        action="store_true",
        help="one live-only and one background-only worker process instead of 2 for both",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server (DBs 12 and 13 are flushed)")
    parser.add_argument("--port", type=int, default=8125, help="web port")
    args = parser.parse_args()

    url = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
    recreate_database(url)
    migrate(url)
    settings = load_settings(
        {}, database_url=url, redis_url=f"{args.redis}/12", cache_redis_url=f"{args.redis}/13", poll_interval=1.0
    )
    for db_url in (settings.redis_url, settings.cache_redis_url):
        redis.Redis.from_url(db_url).flushdb()
    queue = f"live-first-{uuid.uuid4().hex[:6]}"
    sim, sim_url = start_simulator("--block-interval", str(args.block_interval), "--ops-per-block", "3")
    env = {
        **settings_env(settings),
        "QUEUE_NAME": queue,
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "TRON_NODE_URL": sim_url,
        "TRON_WS_URL": sim_url.replace("http://", "ws://") + "/ws",
    }
    procs: list[Proc] = [sim]
    broker = create_broker(settings.redis_url)
    results: dict[str, tuple[list[float], float, int]] = {}
    try:
        procs += start_workers(env, queue, args.split)
        procs += [start_listener(env), start_web(env, args.port)]
        time.sleep(2 * args.block_interval)  # the listener reaches the head
        phases = ["idle", "background"] + (["shared"] if args.shared else [])
        for phase in phases:
            target = queue if phase == "shared" else background_queue(queue)
            enqueue_s: list[float] = [0.0]

            def enqueue(phase: str = phase, target: str = target, took: list[float] = enqueue_s) -> None:
                if phase == "idle":
                    return
                sink = BrokerSink(broker, target)
                started = time.monotonic()
                for first in range(0, args.backlog, 50_000):  # bounded memory for a big backlog
                    count = min(50_000, args.backlog - first)
                    sink.publish(history(count, f"{phase}-{first}-{uuid.uuid4().hex}"))
                took[0] = time.monotonic() - started
                sink.close()

            floor = Simulator(sim_url).status()["head"]
            lags = measure(args.port, floor, args.duration, enqueue)
            left = broker.client.hlen(f"dramatiq:{target}.msgs")
            results[phase] = (lags, enqueue_s[0], left)
            print(
                f"{phase}: {len(lags)} live records, backlog left {left} (enqueued in {enqueue_s[0]:.1f}s)", flush=True
            )
            broker.flush(target)  # the next phase starts with no backlog
    finally:
        broker.close()
        for proc in reversed(procs):
            proc.stop()
    print(
        f"freshness of live records at {args.block_interval:g}-s blocks, {args.duration:.0f}s a phase, "
        f"backlog {args.backlog:,} operations (block timestamp -> first seen in the API, seconds):"
    )
    for phase, (lags, took, left) in results.items():
        if not lags:
            print(f"  {phase:10s}: no live record seen (backlog left {left:,})")
            continue
        print(
            f"  {phase:10s}: {len(lags):4d} records, p50 {statistics.median(lags):.2f}, "
            f"p99 {percentile(lags, 0.99):.2f}, max {max(lags):.2f}; enqueue {took:.0f}s, "
            f"backlog left at the end {left:,}"
        )
    if "idle" in results and "background" in results and results["idle"][0] and results["background"][0]:
        idle, bg = percentile(results["idle"][0], 0.99), percentile(results["background"][0], 0.99)
        verdict = "met" if bg <= idle + 1.0 and results["background"][2] > 0 else "MISSED"
        print(f"target background p99 <= idle p99 + 1 s: {bg:.2f} vs {idle + 1.0:.2f}: {verdict}")


if __name__ == "__main__":
    main()
