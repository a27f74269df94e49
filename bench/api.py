"""Benchmark the API under granian: a cached page, the constant ceiling, and uncached pages.

    .venv/bin/python -m bench.api [--duration 10] [--connections 32] [--blocking-threads 4] ...

Seeds a database (`ledger_bench_api`, created and migrated if needed) with `--rows` stake records
for one pool account (plus other accounts' rows around them), starts the web app under granian with
the Procfile's settings, and runs `wrk --latency` against three routes of the same server:

- cached:   the account's first page of 20, warmed first; every request is a Redis hit.
- constant: `GET /bench/constant`, a fixed body through the same server, Flask and process: the
            ceiling a cached page is measured against.
- uncached: pages after a different cursor on every request (a wrk script walks a list of cursors,
            one per seeded row, each used once), so every request is a cache miss: Redis lookup and
            lock, keyset query in PostgreSQL, and the page stored.

The three take turns for `--rounds` rounds (a machine shared with other work changes speed over a
minute; interleaving spreads that over all three). Prints requests/s, p50 and p99 of each run, then
medians and the ratio cached/constant, by requests/s and by the server's CPU time per request
(granian and its workers, from /proc): on a machine shared with other work the second holds far
better, as other processes take CPU from both routes alike without changing what a request costs.
Then the same two routes in process (`--in-process N`): the WSGI app called directly, N requests
of each route in batches taking turns, timed by this thread's CPU time: the Python a request costs,
without the server, the network or the body's bytes on the wire.
Needs `wrk`, PostgreSQL and Redis; the database and the
cache's Redis DB (11) are the benchmark's own, and its cached pages are deleted after the run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import procfs
from bench.provenance import header, load_average
from harness.servers import free_port
from harness.stack import procfile_web_flag
from ledger.chain.address import to_base58
from ledger.config import load_settings
from ledger.store.cache import PAGE_PREFIX, invalidate_accounts
from ledger.store.db import ensure_database, migrate
from web.cursor import Cursor

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = to_base58("41" + "be" * 20)
NOISE_ACCOUNTS = 50  # other owners, so the account is a slice of a bigger index

TARGETS = {"cached_rps": 3_000, "cached_p99_ms": 15.0, "cached_vs_ceiling": 0.90, "uncached_rps": 1_000}

_WRK_SCRIPT = """
local paths = {}
local n = 0
function init(args)
    for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
    n = id
end
function request()
    local path = paths[(n %% #paths) + 1]
    n = n + %(threads)d
    return wrk.format("GET", path)
end
"""

_WRK_SETUP = """
local next_id = 0
function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end
"""


def paths_script(paths: Path, threads: int) -> str:
    """A wrk Lua script that walks the URL paths listed in `paths`, each wrk thread its own share."""
    return _WRK_SETUP + _WRK_SCRIPT % {"paths": paths, "threads": threads}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 2
    print(header())
    account_id = seed(args.database_url, args.rows)
    cache = redis.Redis.from_url(args.cache_redis_url)
    port = args.port or free_port()
    server = start_server(args, port)
    base = f"http://127.0.0.1:{port}"
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        cached_path = f"/api/stake/records?pool_account_id={account_id}&limit=20"
        with tempfile.TemporaryDirectory() as tmp:
            paths = Path(tmp, "paths.txt")
            paths.write_text("\n".join(uncached_paths(args.database_url, account_id, args.cursors)) + "\n")
            script = Path(tmp, "uncached.lua")
            script.write_text(paths_script(paths, args.threads))
            # The routes take turns, round after round, so a change in the machine's other load
            # affects all three alike rather than whichever happened to run during it.
            for _ in range(args.rounds):
                invalidate_accounts(cache, [ACCOUNT])  # a new generation: every cursor page is a miss again
                for expected in ("database", "cache"):  # warm the cached page
                    source = _get_json(base + cached_path)["meta"]["source"]
                    assert source == expected, f"warm-up got source {source!r}, expected {expected!r}"
                results = {}
                for name, path, lua in (
                    ("cached", cached_path, None),
                    ("constant", "/bench/constant", None),
                    ("uncached", "/", script),
                ):
                    before = _get_json(base + "/api/cache/stats")["data"]
                    cpu_before = procfs.usage(server.pid)[1]
                    results[name] = run_wrk(args, base + path, lua)
                    cpu = procfs.usage(server.pid)[1] - cpu_before
                    results[name]["cpu_us"] = cpu * 1e6 / max(results[name]["requests"], 1)
                    after = _get_json(base + "/api/cache/stats")["data"]
                    results[name]["hits"] = after["hits"] - before["hits"]
                    results[name]["misses"] = after["misses"] - before["misses"]
                rounds.append(results)
                _print_round(len(rounds), results)
    finally:
        stop_server(server)
        _drop_pages(cache)
    report(args, rounds)
    if args.in_process:
        in_process(args, cached_path)
    return 0


# -- data ---------------------------------------------------------------------------------------------


def seed(database_url: str, rows: int) -> int:
    """Create, migrate and fill the bench database (once: a rerun reuses it); return the account id."""
    ensure_database(database_url)
    try:
        migrate(database_url)
    except psycopg.Error as exc:
        # Migrations renamed or rewritten since this database was made: it is ours, start over.
        print(f"migrations do not apply to the existing bench database ({exc}); recreating it")
        _drop_database(database_url)
        ensure_database(database_url)
        migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pool_accounts (address, label) VALUES (%s, 'bench') ON CONFLICT DO NOTHING", (ACCOUNT,)
        )
        account_id = conn.execute("SELECT id FROM pool_accounts WHERE address = %s", (ACCOUNT,)).fetchone()[0]  # type: ignore[index]
        have = conn.execute("SELECT count(*) FROM stake_records WHERE owner_address = %s", (ACCOUNT,)).fetchone()[0]  # type: ignore[index]
        if have >= rows:
            return int(account_id)
        print(f"seeding {rows} records for {ACCOUNT} (+ {rows // 2} for {NOISE_ACCOUNTS} other accounts) ...")
        conn.execute("TRUNCATE stake_records")
        # Four operations per block, amounts up to 2^40 sun, one tx id per row.
        insert = """
            INSERT INTO stake_records (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,
                                       operation_type, contract_type, resource, amount, status)
            SELECT md5(%(tag)s || g) || md5(g || %(tag)s), 0, 50000000 + g / 4, md5(g::text), g %% 4,
                   timestamp with time zone '2025-01-01 00:00:00+00' + (g / 4) * interval '3 s',
                   %(owner)s, CASE WHEN g %% 5 = 0 THEN 'unfreeze' ELSE 'freeze' END,
                   CASE WHEN g %% 5 = 0 THEN 'UnfreezeBalanceV2Contract' ELSE 'FreezeBalanceV2Contract' END,
                   CASE WHEN g %% 3 = 0 THEN 'BANDWIDTH' ELSE 'ENERGY' END,
                   (g * 7919) %% 1099511627776, 'confirmed'
            FROM generate_series(1, %(n)s) g
        """
        conn.execute(insert, {"tag": "main", "owner": ACCOUNT, "n": rows})
        for i in range(NOISE_ACCOUNTS):
            owner = to_base58("41" + f"{i + 1:040x}")
            conn.execute(insert, {"tag": f"noise{i}", "owner": owner, "n": max(1, rows // 2 // NOISE_ACCOUNTS)})
        conn.execute("ANALYZE stake_records")
    return int(account_id)


def _drop_database(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def uncached_paths(database_url: str, account_id: int, count: int) -> list[str]:
    """One distinct cursor per row (the page after that row), so no two requests share a cache key."""
    with psycopg.connect(database_url) as conn:
        keys = conn.execute(
            "SELECT block_num, tx_index, op_index, id FROM stake_records WHERE owner_address = %s"
            " ORDER BY block_num DESC, tx_index DESC, op_index DESC, id DESC LIMIT %s",
            (ACCOUNT, count),
        ).fetchall()
    base = f"/api/stake/records?pool_account_id={account_id}&limit=20&cursor="
    secret = load_settings().cursor_keys[0]  # what the web server (same environment) signs with
    return [base + Cursor("stake", account_id, 2, key).encode(secret) for key in keys]


def _drop_pages(cache: redis.Redis) -> None:
    # Bench clean-up only (not a write path): the uncached run stores thousands of distinct pages.
    for key in cache.scan_iter(f"{PAGE_PREFIX}{ACCOUNT}:*", count=1000):
        cache.unlink(key)


# -- server and load ----------------------------------------------------------------------------------


def granian_argv(args: argparse.Namespace, port: int) -> list[str]:
    argv = [
        str(Path(sys.executable).with_name("granian")),
        "--interface", "wsgi",
        "--factory", "web.app:create_app",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(args.workers),
        "--blocking-threads", str(args.blocking_threads),
        "--http", procfile_web_flag("--http"),
        "--http1-header-read-timeout", procfile_web_flag("--http1-header-read-timeout"),
        "--no-ws",
        "--log-level", "warning",
    ]  # fmt: skip
    if args.backpressure:
        argv += ["--backpressure", str(args.backpressure)]
    if args.runtime_threads:
        argv += ["--runtime-threads", str(args.runtime_threads)]
    return argv


def start_server(
    args: argparse.Namespace, port: int, env: Mapping[str, str] | None = None, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """granian on `port`; `env` adds to the environment, `log` takes its output (default: ours)."""
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CACHE_REDIS_URL": args.cache_redis_url,
        "LOG_LEVEL": "WARNING",
        "BENCH_ROUTES": "1",  # the ceiling route exists only when asked for
        **(env or {}),
    }
    argv = granian_argv(args, port)
    print("server:", " ".join(argv[1:]))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"granian exited with {proc.returncode}")
        try:
            if _get_json(f"http://127.0.0.1:{port}/health/ready")["status"] == "ready":
                # Every worker process must be up, not just the first to answer.
                time.sleep(1.0)
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("granian did not become ready in 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run_wrk(args: argparse.Namespace, url: str, script: Path | None) -> dict[str, float]:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    if args.verbose:
        print(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def _latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def in_process(args: argparse.Namespace, cached_path: str, batch: int = 1000) -> dict[str, float]:
    """CPU us per request of the cached and the constant route, the WSGI app called in this thread."""
    from web.app import close_app, create_app  # the app's imports only when asked for

    settings = replace(
        load_settings(),
        database_url=args.database_url,
        cache_redis_url=args.cache_redis_url,
        log_level="WARNING",
        bench_routes=True,
    )
    app = create_app(settings)
    routes = {"cached": cached_path, "constant": "/bench/constant"}

    def call(target: str) -> None:
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }
        body: Iterable[bytes] = app(environ, _start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    per_request: dict[str, list[float]] = {name: [] for name in routes}
    try:
        for target in routes.values():
            call(target)  # the first read fills the page (and keeps it in memory)
        for _ in range(max(1, args.in_process // batch)):
            for name, target in routes.items():
                start = time.thread_time()
                for _ in range(batch):
                    call(target)
                per_request[name].append((time.thread_time() - start) * 1e6 / batch)
    finally:
        close_app(app)
    figures = {name: statistics.median(times) for name, times in per_request.items()}
    print(
        f"\nin process ({args.in_process} requests of each route, CPU us per request, median of batches of {batch}):"
        f" cached {figures['cached']:.1f}, constant {figures['constant']:.1f};"
        f" cached/ceiling = {figures['constant'] / figures['cached']:.0%}; load average now {load_average()}"
    )
    return figures


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
    return _no_write


def _no_write(data: bytes) -> None:
    pass


# -- output -------------------------------------------------------------------------------------------


def _print_round(number: int, results: dict[str, dict[str, float]]) -> None:
    columns = ("req/s", "p50 ms", "p99 ms", "requests", "hits", "misses", "errors", "CPU us/req")
    print(f"\nround {number} (load average {load_average()})\n{'route':<10} " + " ".join(f"{c:>9}" for c in columns))
    for name, r in results.items():
        errors = int(r["non_2xx"] + r["socket_errors"])
        print(
            f"{name:<10} {r['rps']:>9.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {int(r['requests']):>9}"
            f" {int(r['hits']):>9} {int(r['misses']):>9} {errors:>9} {r['cpu_us']:>9.0f}"
        )
    cached, constant = results["cached"], results["constant"]
    print(
        f"cached/ceiling = {cached['rps'] / constant['rps']:.0%} by req/s, "
        f"{constant['cpu_us'] / cached['cpu_us']:.0%} by the server's CPU per request"
    )


def report(args: argparse.Namespace, rounds: list[dict[str, dict[str, float]]]) -> None:
    """Medians over the rounds (and the worst p99), then the targets."""
    print(
        f"\nsummary: median of {len(rounds)} round(s) of wrk -t{args.threads} -c{args.connections}"
        f" -d{args.duration}s --latency per route, {os.cpu_count()} CPUs"
    )
    print(f"{'route':<10} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'worst p99':>10}")
    summary = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "worst_p99_ms": max(r["p99_ms"] for r in runs),
        }
        s = summary[name]
        print(f"{name:<10} {s['rps']:>9.0f} {s['p50_ms']:>9.2f} {s['p99_ms']:>9.2f} {s['worst_p99_ms']:>10.2f}")
    ratio = statistics.median(r["cached"]["rps"] / r["constant"]["rps"] for r in rounds)
    cpu_ratio = statistics.median(r["constant"]["cpu_us"] / r["cached"]["cpu_us"] for r in rounds)
    print(f"cached/ceiling = {ratio:.0%} (median of the rounds' ratios)")
    print(
        f"cached/ceiling by the server's CPU per request (granian and its workers, from /proc) = {cpu_ratio:.0%}"
        f" (median of the rounds' ratios); load average now {load_average()}"
    )
    cached, uncached = summary["cached"], summary["uncached"]
    checks = [
        (f"cached >= {TARGETS['cached_rps']} req/s", cached["rps"] >= TARGETS["cached_rps"]),
        (f"cached p99 < {TARGETS['cached_p99_ms']} ms", cached["p99_ms"] < TARGETS["cached_p99_ms"]),
        (f"cached >= {TARGETS['cached_vs_ceiling']:.0%} of ceiling", ratio >= TARGETS["cached_vs_ceiling"]),
        (f"uncached >= {TARGETS['uncached_rps']} req/s", uncached["rps"] >= TARGETS["uncached_rps"]),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")
    if args.json:
        print(json.dumps({"rounds": rounds, "summary": summary, "cached_vs_ceiling": ratio}))


# -- helpers ------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three runs, interleaved (default 3)")
    add_wrk_options(p, connections=32)
    add_granian_options(p)
    p.add_argument("--rows", type=int, default=200_000, help="records of the benchmarked account")
    p.add_argument("--cursors", type=int, default=100_000, help="distinct cursors for the uncached run")
    p.add_argument("--port", type=int, default=0)
    # Not ledger_bench nor Redis DBs 12/13: the ingest and freshness benchmarks use (and reset) those.
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench_api")
    p.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/11")
    p.add_argument(
        "--in-process",
        type=int,
        default=20_000,
        metavar="N",
        help="requests of each route with the app called in process, after the wrk rounds (0: none)",
    )
    p.add_argument("--verbose", action="store_true", help="print wrk's own output")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    return p.parse_args(argv)


def add_wrk_options(parser: argparse.ArgumentParser, connections: int) -> None:
    """--connections and --threads, as run_wrk reads them."""
    parser.add_argument("--connections", type=int, default=connections, help=f"wrk connections (default {connections})")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")


def add_granian_options(parser: argparse.ArgumentParser) -> None:
    """granian's --workers, --blocking-threads, --backpressure and --runtime-threads, as granian_argv reads them."""
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes (default 2)")
    parser.add_argument("--blocking-threads", type=int, default=4, help="granian threads per worker (default 4)")
    parser.add_argument(
        "--backpressure",
        type=int,
        default=128,
        help="granian backpressure per worker (default: the Procfile's 128; 0: granian's)",
    )
    parser.add_argument("--runtime-threads", type=int, default=0, help="granian runtime threads (0: default)")


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


if __name__ == "__main__":
    sys.exit(main())
