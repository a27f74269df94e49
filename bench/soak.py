"""Soak: the whole stack as production runs it, at mainnet rate, under a Zipf read load, for long
enough to see memory growth, hit rate and freshness hold (or not).

    .venv/bin/python -m bench.soak                               # the recorded run: 30 min, 1,000 accounts
    .venv/bin/python -m bench.soak --duration 40 --warmup 10     # the CI setting (tests/test_soak.py)
    .venv/bin/python -m bench.soak --json /tmp/soak.json         # also write the figures as JSON
    .venv/bin/python -m bench.soak --mainnet-density             # ~300 KB blocks of mainnet's mix around them

Processes, each as the Procfile starts it: the simulator (the TRON node: `--accounts` pool
accounts, a block every `--block-interval` s with `--ops-per-block` stake, delegate and unfreeze
operations of those accounts on average; with `--mainnet-density` amid mainnet's other traffic,
~300 KB of JSON a block), the listener (WebSocket wake-up on), the workers
(2 processes x 4 threads), the scheduler and the web server (granian, 2 workers x 4 threads).
The broker and the cache are two Redis servers (or two DBs of one) given by URL; PostgreSQL gets a
database of the soak's own, dropped and created at the start.

Read load: `wrk` walking a list of request paths (bench.api.paths_script) drawn from a Zipf law over
the accounts (rank r drawn with weight 1/r^s): most requests are the first page of the stake or
delegate records, or the summary, of a few busy accounts. Each wrk connection waits
connections/rate s between requests (wrk's `delay()`; its latency figures exclude the wait), so
the load stays near what production sees and the machine keeps room for ingest (`--rate 0`: as
fast as it goes). granian counts a --backpressure permit per open connection (docs/DEPLOYMENT.md);
the Procfile's 2 x 128 leave room for wrk's, the watcher's and the stats reads' connections.

Freshness: a watcher polls the first pages of `--watch` accounts (the busiest by the Zipf order,
then every n-th) and notes the first time each record shows: now - the record's block timestamp,
as bench/freshness.py measures it. Its own requests are left out of the hit rate.

Memory: RSS of each process with all its children (granian and dramatiq fork workers), after the
warm-up and at the end; growth is end/start - 1. CPU: the same families' CPU time over the
measured window, as a share of one core. The simulator holds the whole chain in memory by
design (it is the test's oracle, not the product), so it is shown but not held to the target.

Sync: at the end the chain is paused, the ledger drains, and every operation of the simulator's
truth must be in the ledger exactly once with the same values (bench.faults.compare).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import procfs
from bench.api import add_wrk_options, paths_script, run_wrk
from bench.faults import compare
from bench.freshness import Watch, percentile, watch
from harness.load import watched, zipf_paths
from harness.procs import Proc, python
from harness.servers import free_port
from harness.stack import (
    LISTENER_READY,
    WORKER_READY,
    Simulator,
    add_density_option,
    new_ledger,
    settings_env,
    start_simulator,
    start_web,
    worker_proc,
)
from ledger.chain.snapshot import mark_history
from simulator.config import demo_accounts
from simulator.requests import client_label

TARGETS = {"hit_rate": 0.95, "cached_p99_ms": 25.0, "freshness_p99_s": 3.0, "memory_growth": 0.10, "lost": 0}
BLOCKS_PER_DAY = 86_400 // 3
API_KEY = "soak"  # the simulator counts the stack's node requests under this key
# Route mix of the read load: (share, path template); {a} is the account's address.
_DELAY = """
function delay()
    return %(ms)d
end
"""


# -- the stack ----------------------------------------------------------------------------------------


def start_stack(args: argparse.Namespace, accounts: tuple[str, ...]) -> tuple[list[Proc], dict[str, str], str]:
    """Simulator, workers, listener, scheduler, web; returns (processes, env, simulator URL)."""
    sim, sim_url = start_simulator(
        "--block-interval",
        str(args.block_interval),
        "--ops-per-block",
        str(args.ops_per_block),
        "--seed",
        str(args.seed),
        accounts=accounts,
        mainnet_density=args.mainnet_density,
    )
    procs = [sim]
    try:
        settings = new_ledger(args.database_url, args.broker_url, args.cache_redis_url)  # the soak's own (see --help)
        # The chain starts empty at its first block, so each account's whole history is the chain's:
        # mark it so (what `listener backfill --since` does) rather than have the listener take
        # 1,000 opening snapshots, one by one, before it follows a block (a first start's cost,
        # not the steady state this measures).
        with psycopg.connect(args.database_url) as conn:
            for account in accounts:
                mark_history(conn, account)
        env = {
            **settings_env(settings),
            "QUEUE_NAME": f"soak-{uuid.uuid4().hex[:6]}",
            "POOL_ACCOUNTS": ",".join(accounts),
            "TRON_NODE_URL": sim_url,
            "TRON_WS_URL": sim_url.replace("http://", "ws://") + "/ws",
            "TRON_API_KEY": API_KEY,
            "START_BLOCK": str(Simulator(sim_url).status()["start_block"]),  # the truth starts there
        }
        if args.no_budget:
            env |= {"TRON_REQUESTS_PER_SECOND": "0", "TRON_REQUESTS_PER_DAY": "0"}
        # Every process started before waiting for any: their seconds of start-up overlap.
        worker = worker_proc(env, processes=2, threads=4)
        listener = Proc("listener", python("-m", "listener"), env)
        scheduler = Proc("scheduler", python("-m", "scheduler"), env)
        procs += [worker, listener, scheduler]
        procs.append(start_web(env, args.port))
        worker.wait_for(WORKER_READY, timeout=60)
        listener.wait_for(LISTENER_READY, timeout=30)
        scheduler.wait_for(r"scheduler started", timeout=30)
    except BaseException:
        stop_all(procs)
        raise
    return procs, env, sim_url


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        proc.stop()


# -- read load ----------------------------------------------------------------------------------------


def wrk_script(paths: list[str], directory: Path, threads: int, connections: int, rate: float) -> Path:
    listing = directory / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = paths_script(listing, threads)
    if rate > 0:
        script += _DELAY % {"ms": round(connections * 1000 / rate)}
    path = directory / "soak.lua"
    path.write_text(script)
    return path


def wrk_args(args: argparse.Namespace, duration: float) -> argparse.Namespace:
    """The namespace bench.api.run_wrk reads."""
    return argparse.Namespace(threads=args.threads, connections=args.connections, duration=int(duration), verbose=False)


def cache_counts(base: str) -> tuple[int, int]:
    """(hits incl. the micro-cache's, misses) of every web process, from Redis."""
    data = httpx.get(f"{base}/api/cache/stats", timeout=10).json()["data"]
    return int(data["hits"] or 0) + int(data["local_hits"] or 0), int(data["misses"] or 0)


# -- freshness ----------------------------------------------------------------------------------------


# -- memory -------------------------------------------------------------------------------------------


def sample(procs: list[Proc]) -> dict[str, tuple[int, float]]:
    return {proc.name: procfs.usage(proc.popen.pid) for proc in procs}


# -- sync ---------------------------------------------------------------------------------------------


def drain_and_compare(args: argparse.Namespace, sim: Simulator) -> dict[str, Any]:
    """Pause the chain, wait for the listener to reach the head and the ledger to settle, compare."""
    sim.pause()
    head = sim.status()["head"]
    deadline = time.monotonic() + args.drain_timeout
    started = time.monotonic()
    while True:
        truth = sim.truth()["operations"]
        row = compare(args.database_url, truth)
        if (row.clean and _checkpoint(args.database_url) >= head) or time.monotonic() > deadline:
            break
        time.sleep(1)
    return {
        "expected": row.expected,
        "persisted": row.persisted,
        "lost": row.lost,
        "duplicated": row.duplicated,
        "wrong": row.wrong,
        "extra": row.extra,
        "drain_s": round(time.monotonic() - started, 1),
        "sync_success": (row.expected - row.lost) / row.expected if row.expected else None,
        "examples": row.examples,
    }


def _checkpoint(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        found = conn.execute("SELECT max(block_num) FROM listener_checkpoint").fetchone()
        return int(found[0]) if found and found[0] is not None else -1


# -- the run ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    accounts = demo_accounts(args.seed, args.accounts)
    load_before = os.getloadavg()
    procs, _env, sim_url = start_stack(args, accounts)
    sim = Simulator(sim_url)
    base = f"http://127.0.0.1:{args.port}"
    stop = threading.Event()
    seen = Watch()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = zipf_paths(accounts, args.paths, args.zipf, args.seed)
            script = wrk_script(paths, Path(tmp), args.threads, args.connections, args.rate)
            # Warm-up: the listener reaches the head, the caches fill, the processes reach their
            # working size; memory "at start" is taken after it.
            if args.warmup >= 1:
                run_wrk(wrk_args(args, args.warmup), base + "/", script)
            mem_start = sample(procs)
            first_head = sim.status()["head"]
            sim.http.post("/sim/requests/reset")
            watcher = threading.Thread(
                target=watch, args=(base, watched(accounts, args.watch), stop, seen, args.watch_interval)
            )
            watcher.start()
            hits0, misses0 = cache_counts(base)
            started = time.monotonic()
            load = run_wrk(wrk_args(args, args.duration), base + "/", script)
            elapsed = time.monotonic() - started
            hits1, misses1 = cache_counts(base)
            stop.set()
            watcher.join()
            mem_end = sample(procs)
            last_head = sim.status()["head"]
            node = sim.http.get("/sim/requests").json()["clients"].get(client_label(API_KEY, ""), {"total": 0})
        dead = [proc.name for proc in procs if not proc.alive()]
        sync = drain_and_compare(args, sim)
    finally:
        stop.set()
        stop_all(procs)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for proc in procs:
                (args.logs / f"{proc.name}.log").write_text(proc.output() + "\n")
    hits = hits1 - hits0 - seen.hits
    misses = misses1 - misses0 - seen.misses
    blocks = max(last_head - first_head, 1)
    lags = seen.lags
    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "accounts": args.accounts,
            "block_interval_s": args.block_interval,
            "ops_per_block": args.ops_per_block,
            "density": "mainnet" if args.mainnet_density else "light",
            "rate": args.rate,
            "node_budget": "none" if args.no_budget else "the product's default",
            "wrk": f"-t{args.threads} -c{args.connections}",
            "connections": args.connections,
            "zipf": args.zipf,
            "watched_accounts": args.watch,
            "cpus": os.cpu_count(),
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "reads": {
            "rps": load["rps"],
            "requests": load["requests"],
            "p50_ms": load["p50_ms"],
            "p99_ms": load["p99_ms"],
            "errors": load["non_2xx"] + load["socket_errors"],
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
            "elapsed_s": round(elapsed, 1),
        },
        "freshness": {
            "records": len(lags),
            "p50_s": statistics.median(lags) if lags else None,
            "p99_s": percentile(lags, 0.99) if lags else None,
            "max_s": max(lags) if lags else None,
            "watcher_errors": seen.errors,
        },
        "ingest": {
            "blocks": blocks,
            "operations": sync["expected"],
            "node_requests": node["total"],
            "node_requests_per_block": node["total"] / blocks,
            "node_requests_per_day": round(node["total"] / blocks * BLOCKS_PER_DAY),
            "node_requests_by_path": by_route(node.get("paths", {})),
        },
        "memory": {
            name: {
                "start_mb": mem_start[name][0] / 2**20,
                "end_mb": mem_end[name][0] / 2**20,
                "growth": mem_end[name][0] / mem_start[name][0] - 1 if mem_start[name][0] else None,
                "cpu_share": (mem_end[name][1] - mem_start[name][1]) / elapsed,
            }
            for name in mem_start
        },
        "dead_processes": dead,
        "sync": sync,
    }


def by_route(paths: dict[str, int]) -> dict[str, int]:
    """Node requests per route, the account in TronGrid's /v1/accounts/<address>/... paths left out."""
    counts: dict[str, int] = {}
    for path, count in paths.items():
        route = re.sub(r"^/v1/accounts/[^/]+", "/v1/accounts/{a}", path)
        counts[route] = counts.get(route, 0) + count
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def checks(result: dict[str, Any]) -> list[tuple[str, bool]]:
    reads, fresh, sync = result["reads"], result["freshness"], result["sync"]
    product = {name: m for name, m in result["memory"].items() if name != "simulator"}
    growth = max((m["growth"] for m in product.values() if m["growth"] is not None), default=None)
    t = TARGETS
    return [
        (f"hit rate >= {t['hit_rate']:.0%} under Zipf while ingesting", _ge(reads["hit_rate"], t["hit_rate"])),
        # wrk cannot tell hits from misses: with more than 1 % misses this p99 is a miss's latency.
        (f"p99 of all reads (the cached target) < {t['cached_p99_ms']:g} ms", reads["p99_ms"] < t["cached_p99_ms"]),
        (f"freshness p99 < {TARGETS['freshness_p99_s']:g} s", _lt(fresh["p99_s"], TARGETS["freshness_p99_s"])),
        (f"memory growth < {t['memory_growth']:.0%} (every product process)", _lt(growth, t["memory_growth"])),
        ("0 lost, 0 duplicated, 0 wrong", sync["lost"] == 0 and sync["duplicated"] == 0 and sync["wrong"] == 0),
        ("no process died", not result["dead_processes"]),
    ]  # fmt: skip


def _ge(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


def _lt(value: float | None, bound: float) -> bool:
    return value is not None and value < bound


def table(result: dict[str, Any]) -> str:
    s, reads, fresh, ingest, sync = (result[k] for k in ("settings", "reads", "freshness", "ingest", "sync"))
    load = result["load_average"]

    def opt(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    reads_at = (
        f"{s['connections'] * 1000 / s['rate']:.0f} ms between a connection's requests" if s["rate"] else "no pause"
    )
    lines = [
        f"soak: {reads['elapsed_s']:g} s measured after a {s['warmup_s']:g} s warm-up, {s['accounts']} pool accounts,"
        f" a block every"
        f" {s['block_interval_s']:g} s with {s['ops_per_block']:g} tracked ops on average"
        f" ({s.get('density', 'light')} blocks); reads wrk {s['wrk']}"
        f" at {reads_at}, Zipf s={s['zipf']:g}; node budget: {s.get('node_budget', 'default')}; {s['cpus']} CPUs,"
        f" load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after",
        "",
        f"{'figure':<34} {'value':>14}",
        f"{'reads req/s':<34} {reads['rps']:>14,.0f}",
        f"{'reads p50 / p99 ms':<34} {reads['p50_ms']:>6.2f} / {reads['p99_ms']:<6.2f}",
        f"{'read errors (non-2xx, socket)':<34} {reads['errors']:>14}",
        f"{'cache hit rate':<34} {opt(reads['hit_rate'], '>14.1%')}",
        f"{'freshness p50 / p99 / max s':<34} {opt(fresh['p50_s'], '.2f')} / {opt(fresh['p99_s'], '.2f')}"
        f" / {opt(fresh['max_s'], '.2f')} ({fresh['records']} records)",
        f"{'blocks / operations':<34} {ingest['blocks']:>6} / {ingest['operations']}",
        f"{'node requests per block (a day)':<34} {ingest['node_requests_per_block']:>6.2f}"
        f" ({ingest['node_requests_per_day']:,})",
        "  by route: " + ", ".join(f"{route} {n}" for route, n in ingest["node_requests_by_path"].items()),
        f"{'sync: lost / dup / wrong / extra':<34} {sync['lost']} / {sync['duplicated']} / {sync['wrong']}"
        f" / {sync['extra']} of {sync['expected']} (drained in {sync['drain_s']} s)",
        f"{'sync success':<34} {opt(sync['sync_success'], '>14.2%')}",
        "",
        f"{'process, incl. children':<28} {'RSS start MB':>12} {'end MB':>9} {'growth':>8} {'CPU':>7}",
    ]
    for name, m in result["memory"].items():
        note = "  (the oracle: not held to the target)" if name == "simulator" else ""
        cpu = opt(m.get("cpu_share"), ">7.0%")
        lines.append(f"{name:<28} {m['start_mb']:>12.1f} {m['end_mb']:>9.1f} {opt(m['growth'], '>8.1%')} {cpu}{note}")
    if result["dead_processes"]:
        lines.append(f"processes that died: {', '.join(result['dead_processes'])}")
    lines.append("")
    lines += [f"  {'✓' if ok else '✗'} {label}" for label, ok in checks(result)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=1800, help="seconds measured after the warm-up (default 1800)")
    p.add_argument("--warmup", type=float, default=60, help="seconds of read load before memory 'at start' (60)")
    p.add_argument("--accounts", type=int, default=1000, help="pool accounts (default 1000)")
    p.add_argument("--block-interval", type=float, default=3.0, help="seconds between blocks (default 3)")
    p.add_argument("--ops-per-block", type=float, default=30.0, help="mean tracked stake ops a block (default 30)")
    add_density_option(p)
    p.add_argument(
        "--rate",
        type=float,
        default=1500,
        help="each connection waits connections/rate s between requests (0: no wait); the answer's own"
        " latency comes on top, so the rate reached is lower: 1,500 gives about 1,000 req/s (default 1500)",
    )
    p.add_argument(
        "--no-budget",
        action="store_true",
        help="no node request budget (an own node); default: the product's (10 requests/s, 100,000 a day)",
    )
    # Few connections, each paced by --rate: the load production sees, leaving the machine room to ingest.
    add_wrk_options(p, connections=6)
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the account choice (default 1.1)")
    p.add_argument("--paths", type=int, default=100_000, help="request paths drawn for wrk to walk")
    p.add_argument("--watch", type=int, default=20, help="accounts the freshness watcher polls (default 20)")
    p.add_argument("--watch-interval", type=float, default=0.1, help="pause between the watcher's sweeps (s)")
    p.add_argument("--drain-timeout", type=float, default=180, help="seconds allowed to drain at the end")
    p.add_argument("--seed", type=int, default=1, help="the simulator's seed (chain content, accounts, paths)")
    p.add_argument("--port", type=int, default=0, help="the web server's port (0: a free one)")
    # The soak's own database and Redis DBs: dropped and flushed at the start.
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ledger_soak")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/4", help="broker Redis DB (flushed)")
    p.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/5", help="cache Redis DB (flushed)")
    p.add_argument("--logs", type=Path, help="write each process's output to DIR/<name>.log at the end")
    p.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    args = p.parse_args(argv)
    args.port = args.port or free_port()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    result = run(args)
    print(table(result))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if all(ok for _, ok in checks(result)) else 1


if __name__ == "__main__":
    sys.exit(main())
