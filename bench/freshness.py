"""Freshness: block timestamp -> first visible in the API, while following the head at 3 s blocks,
with the WebSocket wake-up and with polling alone, side by side in the same run; and what that
costs: node requests per new block, by the simulator's own per-client count (each listener sends
its own API key), and the requests a day that projects to at one block per 3 s.

    .venv/bin/python -m bench.freshness --duration 300     # the recorded run
    .venv/bin/python -m bench.freshness --duration 60      # a short one
    .venv/bin/python -m bench.freshness --ops-per-block 0.2 --duration 600   # a pool's realistic share
    .venv/bin/python -m bench.freshness --mainnet-density --duration 120     # ~300 KB blocks to parse

One simulator feeds two complete pipelines (listener, worker, web; each with its own database
and Redis DBs): "ws" has TRON_WS_URL set, "poll" does not. Both use the same POLL_INTERVAL. A
thread polls each API's first pages every 50 ms and notes when each new record first shows.
Each listener's CPU time over the measured window is printed per new block (from /proc).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from bench import procfs
from harness.procs import Proc
from harness.servers import free_port
from harness.stack import (
    SIM_ACCOUNTS,
    add_density_option,
    new_ledger,
    settings_env,
    start_listener,
    start_simulator,
    start_web,
    start_worker,
)
from simulator.requests import client_label

VARIANTS = {  # name -> (database, broker Redis DB, cache Redis DB)
    "ws": ("ledger_bench_ws", 12, 13),
    "poll": ("ledger_bench_poll", 6, 7),
}
BLOCKS_PER_DAY = 86_400 // 3


@dataclass
class Watch:
    """What a freshness watcher saw: the lags (seconds), and its own cache hits and misses and failed
    requests (a benchmark that measures the hit rate leaves the watcher's out)."""

    lags: list[float] = field(default_factory=list)
    hits: int = 0
    misses: int = 0
    errors: int = 0


def watch(
    base: str, accounts: Sequence[str], stop: threading.Event, seen_by: Watch, interval: float = 0.05, floor: int = -1
) -> None:
    """Poll the first pages of the stake and delegate records of `accounts` at `base` until `stop`,
    and note each record of a block above `floor` the first time it shows: now - its block timestamp."""
    http = httpx.Client(base_url=base, timeout=10)
    seen: set[tuple[str, int]] = set()
    first_poll = True
    while not stop.is_set():
        for account in accounts:
            for path in ("/api/stake/records", "/api/delegate/records"):
                try:
                    body = http.get(path, params={"pool_account_id": account, "limit": 50}).json()
                except (httpx.HTTPError, ValueError):
                    seen_by.errors += 1  # a slow answer on a loaded machine: the next poll sees the record
                    continue
                now_ms = time.time() * 1000
                if body.get("meta", {}).get("source") == "cache":
                    seen_by.hits += 1
                else:
                    seen_by.misses += 1
                for row in body.get("data", []):
                    key = (row["tx_id"], row["op_index"])
                    if row["block_num"] <= floor or key in seen:
                        continue
                    seen.add(key)
                    if not first_poll:  # rows already there at the start say nothing about lag
                        block_ms = datetime.fromisoformat(row["block_time"]).timestamp() * 1000
                        seen_by.lags.append((now_ms - block_ms) / 1000)
        first_poll = False
        stop.wait(interval)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_pipeline(name: str, sim_url: str, poll_interval: float, redis_base: str, tag: str, port: int) -> list[Proc]:
    database, broker_db, cache_db = VARIANTS[name]
    settings = new_ledger(
        f"postgresql://postgres@127.0.0.1:5432/{database}{tag}", f"{redis_base}/{broker_db}", f"{redis_base}/{cache_db}"
    )
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"fresh-{name}-{uuid.uuid4().hex[:6]}",
        "LOG_LEVEL": "INFO",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "POLL_INTERVAL": str(poll_interval),
        "TRON_NODE_URL": sim_url,
        "TRON_API_KEY": f"bench-{name}",  # so the simulator counts each listener apart
        "TRON_REQUESTS_PER_SECOND": "10",  # the defaults, as against TronGrid with a free key
        "TRON_REQUESTS_PER_DAY": "100000",
    }
    if name == "ws":
        env["TRON_WS_URL"] = sim_url.replace("http://", "ws://") + "/ws"
    return [start_worker(env), start_listener(env), start_web(env, port)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measurement")
    parser.add_argument("--block-interval", type=float, default=3.0)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the listeners' POLL_INTERVAL")
    parser.add_argument("--ops-per-block", type=float, default=3.0, help="tracked stake operations per block")
    add_density_option(parser)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the pipelines (DBs 6,7,12,13)")
    parser.add_argument("--tag", default="", help="suffix for the databases (two runs on one PostgreSQL)")
    args = parser.parse_args()

    sim, url = start_simulator(
        "--block-interval",
        str(args.block_interval),
        "--ops-per-block",
        str(args.ops_per_block),
        mainnet_density=args.mainnet_density,
    )
    procs = [sim]
    listeners: dict[str, Proc] = {}
    # Free ports, not fixed ones: a run's closed connections hold its ports in TIME_WAIT for a minute.
    ports = {name: free_port() for name in VARIANTS}
    results = {name: Watch() for name in VARIANTS}
    stop = threading.Event()
    node = httpx.Client(base_url=url, timeout=10)
    try:
        for name in VARIANTS:
            pipeline = start_pipeline(name, url, args.poll_interval, args.redis, args.tag, ports[name])
            listeners[name] = pipeline[1]
            procs += pipeline
        time.sleep(4 * args.block_interval)  # let both listeners reach the head
        watchers = [
            threading.Thread(target=watch, args=(f"http://127.0.0.1:{port}", SIM_ACCOUNTS, stop, results[name]))
            for name, port in ports.items()
        ]
        for thread in watchers:
            thread.start()
        node.post("/sim/requests/reset")
        first_head = node.get("/sim/status").json()["head"]
        cpu_start = {name: procfs.usage(proc.popen.pid)[1] for name, proc in listeners.items()}
        time.sleep(args.duration)
        last_head = node.get("/sim/status").json()["head"]
        cpu = {name: procfs.usage(proc.popen.pid)[1] - cpu_start[name] for name, proc in listeners.items()}
        counts = node.get("/sim/requests").json()["clients"]
        stop.set()
        for thread in watchers:
            thread.join()
    finally:
        for proc in reversed(procs):
            proc.stop()
    print(
        f"freshness over {args.duration:.0f}s at {args.block_interval}s blocks, POLL_INTERVAL {args.poll_interval}s "
        "(block timestamp -> first seen in the API, seconds):"
    )
    for name, seen in results.items():
        lags = seen.lags
        if not lags:
            print(f"  {name:5s}: no new records seen")
            continue
        print(
            f"  {name:5s}: {len(lags)} records, p50 {statistics.median(lags):.2f}, "
            f"p99 {percentile(lags, 0.99):.2f}, max {max(lags):.2f}"
        )
    blocks = last_head - first_head
    density = "mainnet density" if args.mainnet_density else "light blocks"
    print(
        f"node requests while following the head: {blocks} new blocks ({density}), "
        f"{args.ops_per_block} tracked ops/block"
    )
    for name in VARIANTS:
        mine = counts.get(client_label(f"bench-{name}", ""), {"total": 0, "paths": {}})
        per_block = mine["total"] / max(blocks, 1)
        paths = ", ".join(f"{p.rsplit('/', 1)[-1]} {n}" for p, n in sorted(mine["paths"].items()))
        print(
            f"  {name:5s}: {mine['total']} requests, {per_block:.3f} per new block, "
            f"{per_block * BLOCKS_PER_DAY:,.0f} a day projected ({paths}); "
            f"listener CPU {cpu[name] * 1000 / max(blocks, 1):.0f} ms per new block"
        )


if __name__ == "__main__":
    main()
