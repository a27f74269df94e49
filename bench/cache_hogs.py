"""What two CPU hogs beside the web server cost the cached route, next to what they cost the constant route.

    .venv/bin/python -m bench.cache_hogs [--duration 10] [--rounds 3] [--hogs 2] ...

The cache's circuit breaker must tell a dead or hung cache Redis from one that answers slowly
because the host's CPUs are busy: opened on a busy host, it sends every read to PostgreSQL, the most
expensive path, exactly when the machine has the least to spare. So on the database of `bench.api`
(seeded the same way) and the web app under granian with the Procfile's settings, four `wrk
--latency` runs take turns, round after round:

- cached:         the account's first page of 20, warmed first: a Redis round trip a request (the
                  in-process micro-cache is off, `--local-ttl 0`, or it would hide Redis; the
                  production default, 0.25, serves a hot page from the process's memory);
- constant:       `GET /bench/constant`, a fixed body through the same server, Flask and process;
- cached + hogs, constant + hogs: the same while `--hogs` processes spin on the CPU beside them
                  (at the same priority as the server and Redis).

Hogs slow both routes; what the breaker adds shows as the cached route losing more than the
constant one. Prints each run (req/s, p50, p99, the share of requests answered from Redis, the
breaker's openings from the server's log), then the medians and the ratios with and without hogs
of both routes, from the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.api import (
    ACCOUNT,
    _drop_pages,
    _get_json,
    add_granian_options,
    add_wrk_options,
    run_wrk,
    seed,
    start_server,
    stop_server,
)
from harness.servers import free_port
from ledger.store.cache import invalidate_accounts

BREAKER_OPENED = b"cache unavailable"  # ledger/store/cache.py's warning when the breaker opens
HOG = "while True:\n    pass\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 2
    account_id = seed(args.database_url, args.rows)
    cache = redis.Redis.from_url(args.cache_redis_url)
    port = args.port or free_port()
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp, "web.log")
        with log_path.open("wb") as log:
            server = start_server(args, port, env={"CACHE_LOCAL_TTL": str(args.local_ttl)}, log=log)
        base = f"http://127.0.0.1:{port}"
        cached_path = f"/api/stake/records?pool_account_id={account_id}&limit=20"
        try:
            for number in range(1, args.rounds + 1):
                invalidate_accounts(cache, [ACCOUNT])
                for expected in ("database", "cache"):
                    source = _get_json(base + cached_path)["meta"]["source"]
                    assert source == expected, f"warm-up got source {source!r}, expected {expected!r}"
                results: dict[str, dict[str, float]] = {}
                # Without and with hogs in alternating order, so a drift in the machine's other load
                # over a round does not fall on one side only.
                for hogs in (0, args.hogs) if number % 2 else (args.hogs, 0):
                    with Hogs(hogs):
                        for name, path in (("cached", cached_path), ("constant", "/bench/constant")):
                            label = name + (" + hogs" if hogs else "")
                            results[label] = _measured(args, base, path, log_path)
                runs.append(results)
                _print_run(number, results)
        finally:
            stop_server(server)
            _drop_pages(cache)
            cache.close()
    report(args, runs)
    return 0


class Hogs:
    """`count` processes that spin on the CPU while the block runs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Hogs:
        self.procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(self.count)]
        time.sleep(0.5 if self.procs else 0)  # running before the load starts
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)


def _measured(args: argparse.Namespace, base: str, path: str, log_path: Path) -> dict[str, float]:
    """One wrk run, with the requests Redis answered and the breaker's openings during it."""
    opened_before = log_path.read_bytes().count(BREAKER_OPENED)
    before = _get_json(base + "/api/cache/stats")["data"]
    result = run_wrk(args, base + path, None)
    after = _get_json(base + "/api/cache/stats")["data"]
    result["hits"] = after["hits"] - before["hits"]
    result["opened"] = log_path.read_bytes().count(BREAKER_OPENED) - opened_before
    return result


def _hit_share(r: dict[str, float]) -> float:
    return max(0.0, r["hits"]) / r["requests"] if r["requests"] else 0.0


def _print_run(number: int, results: dict[str, dict[str, float]]) -> None:
    columns = ("req/s", "p50 ms", "p99 ms", "requests", "from Redis", "breaker", "errors")
    print(f"\nround {number}\n{'route':<16} " + " ".join(f"{c:>10}" for c in columns), flush=True)
    for name in ("cached", "constant", "cached + hogs", "constant + hogs"):
        r = results[name]
        redis_share = f"{_hit_share(r):.1%}" if name.startswith("cached") else "-"
        errors = int(r["non_2xx"] + r["socket_errors"])
        print(
            f"{name:<16} {r['rps']:>10.0f} {r['p50_ms']:>10.2f} {r['p99_ms']:>10.2f} {int(r['requests']):>10}"
            f" {redis_share:>10} {int(r['opened']):>10} {errors:>10}",
            flush=True,
        )


def report(args: argparse.Namespace, runs: list[dict[str, dict[str, float]]]) -> None:
    print(
        f"\nsummary: median of {len(runs)} round(s) of wrk -t{args.threads} -c{args.connections}"
        f" -d{args.duration}s --latency per run, {args.hogs} hog(s), CACHE_LOCAL_TTL={args.local_ttl:g},"
        f" {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'route':<16} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'from Redis':>11} {'breaker':>8}")
    med: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        rs = [r[name] for r in runs]
        med[name] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "redis": statistics.median(_hit_share(r) for r in rs),
            "opened": sum(r["opened"] for r in rs),
        }
        m = med[name]
        share = f"{m['redis']:.1%}" if name.startswith("cached") else "-"
        print(f"{name:<16} {m['rps']:>9.0f} {m['p50_ms']:>9.2f} {m['p99_ms']:>9.2f} {share:>11} {int(m['opened']):>8}")

    def ratio(route: str, key: str) -> float:
        # Per round (hogs and no hogs of one round ran minutes apart at most), then the median.
        return statistics.median(r[f"{route} + hogs"][key] / r[route][key] for r in runs)

    rps = {route: ratio(route, "rps") for route in ("cached", "constant")}
    p99 = {route: ratio(route, "p99_ms") for route in ("cached", "constant")}
    print("with hogs / without (median of the rounds' ratios):")
    for route in ("cached", "constant"):
        print(f"  {route:<9} req/s x{rps[route]:.2f}   p99 x{p99[route]:.2f}")
    checks = [
        ("hogs cost the cached route's req/s no more than the constant's", rps["cached"] >= rps["constant"]),
        ("hogs raise the cached route's p99 no more than the constant's", p99["cached"] <= p99["constant"]),
        ("the breaker did not open", med["cached + hogs"]["opened"] == 0 and med["cached"]["opened"] == 0),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cache_hogs", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the four runs (default 3)")
    p.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the server (default 2)")
    p.add_argument(
        "--local-ttl", type=float, default=0.0, help="the server's CACHE_LOCAL_TTL (default 0: every read asks Redis)"
    )
    add_wrk_options(p, connections=32)
    add_granian_options(p)
    p.add_argument("--rows", type=int, default=200_000, help="records of the benchmarked account (bench.api's)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench_api")
    p.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/11")
    p.add_argument("--verbose", action="store_true", help="print wrk's own output")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
