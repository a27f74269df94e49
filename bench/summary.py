"""Benchmark the account summary (ledger.store.positions) of a busy pool account.

    .venv/bin/python -m bench.summary [--ops 1000000] [--receivers 500] [--duration 10] ...

Seeds a private database (`ledger_bench_summary`) by COPY with `--ops` operations of one pool
account spread over `--receivers` receivers (freezes, locked and unlocked delegations,
undelegations, a few unfreezes and withdraws, four per block), folds its positions once (as the
workers' confirmations do), and starts the web app under granian. Then, with `wrk --latency`:

- cached:   the account's summary, warmed first; every request is a Redis hit.
- uncached: every request a cache miss. The summary of one account is one cache entry, so the run
            walks `--copies` pool accounts holding the same folded positions as the busy account
            (same 500 receivers, same lots) plus the account itself, each asked once per round after
            all of them were invalidated: Redis lookup and lock, the folded state and the pending
            tail read from PostgreSQL, the figures computed and the page stored.
- direct:   `read_summary` of the busy account itself called in a loop in this process (no HTTP, no
            cache): the database and computation part of a miss for the 1,000,000-operation account.
- writes:   the cached route again while a thread writes `--write-rate` operations/s to the busy
            account (persist + cache invalidation, as the worker does, and a confirmation, which
            folds, every 3 s): most requests then miss.

The uncached walk asks each account with `limit` 96..104 (nine pages of about 100 receiver
records, each its own cache key), so a run of up to 9 x (`--copies` + 1) requests is all misses;
"uncached-1000" does the same with limit 993..1000 (the whole 1,000-record receivers list).
"uncached-paced" walks the same misses again (after a new invalidation) at `--paced-rate` requests/s
in all: each connection waits connections/rate between its requests (wrk's `delay()`, not counted
in the latency), so its p99 is the latency of a miss at that rate, where "uncached" measures the
most the server answers, when every request also queues behind the 15 others.

- big:      a second account with `--big-receivers` receivers (100,000 by default; 0: none), folded
            the same way: its summary over HTTP after an invalidation each time (uncached), from the
            cache, and `read_summary` in-process, one request at a time; with the body sizes of the
            default page, of 1,000 receivers a page, and of the whole state rendered at once.

Prints req/s, p50 and p99 of each, against the targets (uncached: >= 500 req/s at most, and p99 <= 20 ms
at 500 req/s; the big account's uncached summary < 50 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import redis

from bench.api import (
    _drop_database,
    _get_json,
    add_granian_options,
    add_wrk_options,
    paths_script,
    run_wrk,
    start_server,
    stop_server,
)
from harness.servers import free_port
from ledger.chain.address import to_base58
from ledger.domain import Operation
from ledger.positions import Position
from ledger.store import positions
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.cache import PAGE_PREFIX, invalidate_accounts
from ledger.store.db import ensure_database, migrate
from web.positions import read_summary
from web.responses import dumps
from workers.persist import confirm_blocks, persist_operations

ACCOUNT = to_base58("41" + "5a" * 20)
BIG = to_base58("41" + "5b" * 20)
FIRST_BLOCK = 50_000_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
DELAY_S = 14 * 86_400
TARGETS = {"uncached_p99_ms": 20.0, "uncached_rps": 500, "big_uncached_p99_ms": 50.0}
# wrk calls delay() before each request of a connection: milliseconds to wait first.
_DELAY = """
function delay()
    return %(ms)d
end
"""
LIMITS = range(96, 105)  # page sizes of the uncached walk: one cache key each
WHOLE_LIMITS = range(993, 1001)


def receiver(i: int) -> str:
    return to_base58("41" + f"{0xEE000000 + i:040x}")


def copy_address(i: int) -> str:
    return to_base58("41" + f"{0xC0000000 + i:040x}")


def _tx(g: int) -> str:
    return hashlib.sha256(f"bench-summary/{g}".encode()).hexdigest()


def seed(args: argparse.Namespace) -> int:
    """Create the database and fill it (once: a rerun with the same sizes reuses it); return the
    last block."""
    url = args.database_url
    ensure_database(url)
    try:
        migrate(url)
    except psycopg.Error:
        _drop_database(url)
        ensure_database(url)
        migrate(url)
    last_block: int = FIRST_BLOCK + (args.ops - 1) // 4
    with psycopg.connect(url, autocommit=True) as conn:
        # What an earlier run's writes added is removed, so a rerun starts from the same data.
        conn.execute("DELETE FROM delegate_records WHERE block_num > %s", (last_block,))
        have = conn.execute(
            "SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)"
        ).fetchone()
        copies = conn.execute("SELECT count(*) FROM pool_accounts").fetchone()
        accounts = args.copies + 1 + (1 if args.big_receivers else 0)
        if have and have[0] == args.ops + _big_ops(args) and copies and copies[0] == accounts:
            _refold(conn, last_block)
            return last_block
        print(f"seeding {args.ops} operations of {ACCOUNT} over {args.receivers} receivers (COPY) ...", flush=True)
        started = time.monotonic()
        conn.execute(
            "TRUNCATE stake_records, delegate_records, unfreeze_records, pool_accounts, positions,"
            " position_receivers, position_openings, listener_checkpoint"
        )
        _copy_operations(conn, args)
        _copy_big(conn, args, last_block)
        conn.execute("ANALYZE stake_records")
        conn.execute("ANALYZE delegate_records")
        print(f"  copied in {time.monotonic() - started:.1f}s; folding positions ...", flush=True)
        conn.execute("INSERT INTO pool_accounts (address, label) VALUES (%s, 'bench')", (ACCOUNT,))
        if args.big_receivers:
            conn.execute("INSERT INTO pool_accounts (address, label) VALUES (%s, 'bench-big')", (BIG,))
        started = time.monotonic()
        with conn.transaction():
            positions.fold(conn, last_block, DELAY_S * 1000)
        for address in (ACCOUNT, BIG) if args.big_receivers else (ACCOUNT,):
            row = conn.execute("SELECT state::text FROM positions WHERE address = %s", (address,)).fetchone()
            assert row is not None
            pos = Position.from_json(row[0])
            print(
                f"  {address}: {len(pos.pairs)} (receiver, resource) records, {len(pos.lots)} lots,"
                f" state {len(row[0])} bytes",
                flush=True,
            )
        print(f"  folded in {time.monotonic() - started:.1f}s", flush=True)
        # The copies: other pool accounts whose folded state is the busy account's.
        with conn.cursor().copy("COPY pool_accounts (address, label) FROM STDIN") as copy:
            for i in range(args.copies):
                copy.write_row((copy_address(i), "bench-copy"))
        conn.execute(
            "INSERT INTO positions (address, block_num, state, figures)"
            " SELECT p.address, %s, s.state, s.figures FROM pool_accounts p, positions s"
            " WHERE p.label = 'bench-copy' AND s.address = %s",
            (last_block, ACCOUNT),
        )
        conn.execute(
            "INSERT INTO position_receivers (address, receiver, resource, unlocked, locked, expire_ms)"
            " SELECT p.address, r.receiver, r.resource, r.unlocked, r.locked, r.expire_ms"
            " FROM pool_accounts p, position_receivers r WHERE p.label = 'bench-copy' AND r.address = %s",
            (ACCOUNT,),
        )
        conn.execute("VACUUM ANALYZE position_receivers")
        ms = int((T0 + timedelta(seconds=3 * (last_block - FIRST_BLOCK))).timestamp() * 1000)
        conn.execute(
            "INSERT INTO listener_checkpoint (name, block_num, block_id, block_time_ms) VALUES (%s, %s, 'b', %s)",
            (MAIN_CHECKPOINT, last_block, ms),
        )
        conn.execute("UPDATE chain_state SET head_block = %s, solid_block = %s", (last_block, last_block))
    return last_block


def _big_ops(args: argparse.Namespace) -> int:
    """Operations of the big account: a freeze, then per receiver an ENERGY delegation and, for
    every other receiver, a BANDWIDTH one."""
    n: int = args.big_receivers
    return 0 if not n else 1 + n + (n + 1) // 2


def _copy_big(conn: psycopg.Connection, args: argparse.Namespace, last_block: int) -> None:
    """The big account's records, in the blocks of the busy account's history: a quarter of its
    ENERGY delegations locked past the checkpoint (a lock the read must sum), a quarter locked with
    the lock ended, the rest unlocked."""
    n: int = args.big_receivers
    if not n:
        return
    stake_cols = (
        "tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address, operation_type,"
        " contract_type, resource, amount, status, parent_time_ms"
    )
    deleg_cols = (
        "tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address, receiver_address,"
        " operation_type, contract_type, resource, amount, lock, lock_period, status, parent_time_ms"
    )
    span = last_block - FIRST_BLOCK

    def at(g: int) -> tuple[int, datetime, int]:
        block = FIRST_BLOCK + g * span // (_big_ops(args) + 1)
        when = T0 + timedelta(seconds=3 * (block - FIRST_BLOCK))
        return block, when, int(when.timestamp() * 1000) - 3000

    with conn.cursor().copy(f"COPY stake_records ({stake_cols}) FROM STDIN") as stake:
        block, when, parent = at(0)
        stake.write_row(
            (_tx(-1), 0, block, f"{block:064x}", 9, when, BIG, "freeze", "FreezeBalanceV2Contract", "ENERGY",
             10**18, "confirmed", parent)
        )  # fmt: skip
    with conn.cursor().copy(f"COPY delegate_records ({deleg_cols}) FROM STDIN") as deleg:
        g = 0
        for i in range(n):
            for res in ("ENERGY", "BANDWIDTH") if i % 2 == 0 else ("ENERGY",):
                g += 1
                block, when, parent = at(g)
                lock = res == "ENERGY" and i % 4 in (0, 1)
                period = (span + 1000 if i % 4 == 0 else 100) if lock else 0
                deleg.write_row(
                    (_tx(-1 - g), 0, block, f"{block:064x}", 9, when, BIG, big_receiver(i), "delegate",
                     "DelegateResourceContract", res, 1_000_000 + i, lock, period, "confirmed", parent)
                )  # fmt: skip


def big_receiver(i: int) -> str:
    return to_base58("41" + f"{0xBB000000 + i:040x}")


def _refold(conn: psycopg.Connection, last_block: int) -> None:
    conn.execute("DELETE FROM positions WHERE address = %s AND block_num <> %s", (ACCOUNT, last_block))
    conn.execute("UPDATE positions SET block_num = %s WHERE block_num > %s", (last_block, last_block))
    if conn.execute("SELECT 1 FROM positions WHERE address = %s", (ACCOUNT,)).fetchone() is None:
        print("folding positions again ...", flush=True)
        with conn.transaction():
            positions.fold(conn, last_block, DELAY_S * 1000)
    ms = int((T0 + timedelta(seconds=3 * (last_block - FIRST_BLOCK))).timestamp() * 1000)
    conn.execute("UPDATE listener_checkpoint SET block_num = %s, block_time_ms = %s", (last_block, ms))
    conn.execute("UPDATE chain_state SET head_block = %s, solid_block = %s", (last_block, last_block))


def _copy_operations(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    stake_cols = (
        "tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address, operation_type,"
        " contract_type, resource, amount, status, parent_time_ms"
    )
    deleg_cols = (
        "tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address, receiver_address,"
        " operation_type, contract_type, resource, amount, lock, lock_period, status, parent_time_ms"
    )
    # One COPY per connection at a time: the delegations go through a second connection.
    with (
        psycopg.connect(args.database_url, autocommit=True) as other,
        conn.cursor().copy(f"COPY stake_records ({stake_cols}) FROM STDIN") as stake,
        other.cursor().copy(f"COPY delegate_records ({deleg_cols}) FROM STDIN") as deleg,
    ):
        for g in range(args.ops):
            block = FIRST_BLOCK + g // 4
            when = T0 + timedelta(seconds=3 * (block - FIRST_BLOCK))
            parent = int(when.timestamp() * 1000) - 3000
            common = (_tx(g), 0, block, f"{block:064x}", g % 4, when, ACCOUNT)
            kind = g % 10
            if kind in (0, 1):
                res = "ENERGY" if kind == 0 else "BANDWIDTH"
                stake.write_row((*common, "freeze", "FreezeBalanceV2Contract", res, 50_000_000, "confirmed", parent))
            elif kind == 5 and g % 50_000 == 5:  # a few unfreezes: the chain keeps at most 32 lots
                stake.write_row(
                    (*common, "unfreeze", "UnfreezeBalanceV2Contract", "ENERGY", 1_000_000, "confirmed", parent)
                )
            elif kind == 6 and g % 50_000 == 6:
                stake.write_row(
                    (
                        *common,
                        "withdraw_expire_unfreeze",
                        "WithdrawExpireUnfreezeContract",
                        None,
                        0,
                        "confirmed",
                        parent,
                    )
                )
            else:
                to = receiver((g // 10) % args.receivers)
                res = "BANDWIDTH" if kind in (7, 8) else "ENERGY"
                undelegate = kind in (4, 9)
                lock = kind == 2 and g % 20 == 2
                deleg.write_row(
                    (
                        *common,
                        to,
                        "undelegate" if undelegate else "delegate",
                        "UnDelegateResourceContract" if undelegate else "DelegateResourceContract",
                        res,
                        5_000_000 if undelegate else 10_000_000,
                        lock,
                        28_800 if lock else 0,
                        "confirmed",
                        parent,
                    )
                )


def direct(args: argparse.Namespace, count: int, address: str, limit: int | None) -> dict[str, float]:
    """read_summary of an account in a loop (a page of `limit` receivers; None: the whole state
    rendered at once): latencies in ms."""
    times = []
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        for _ in range(count):
            started = time.perf_counter()
            read_summary(conn, address, DELAY_S * 1000, limit=limit)
            times.append((time.perf_counter() - started) * 1000)
    return _figures(times)


def _figures(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "rps": len(times) / (sum(times) / 1000),
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "requests": len(times),
    }


def _body_size(base: str, address: str, limit: int | None) -> int:
    query = "" if limit is None else f"?limit={limit}"
    with urllib.request.urlopen(f"{base}/api/accounts/{address}/summary{query}", timeout=60) as response:
        return len(response.read())


def measure_big(args: argparse.Namespace, base: str, cache: redis.Redis) -> dict[str, dict[str, float]]:
    """The big account's summary one request at a time: over HTTP after an invalidation (a miss
    each), from the cache, in-process; and once, the whole state rendered."""
    port = int(base.rsplit(":", 1)[1])
    out: dict[str, dict[str, float]] = {}
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for name, invalidate in (("big uncached", True), ("big cached", False)):
            times = []
            for _ in range(args.big_requests):
                if invalidate:
                    invalidate_accounts(cache, [BIG])
                started = time.perf_counter()
                client.request("GET", f"/api/accounts/{BIG}/summary")
                response = client.getresponse()
                body = response.read()
                times.append((time.perf_counter() - started) * 1000)
                assert response.status == 200, body[:200]
                source = orjson.loads(body)["meta"]["source"]
                assert source == ("database" if invalidate else "cache") or len(times) == 1, source
            out[name] = _figures(times)
    finally:
        client.close()
    out["big direct"] = direct(args, args.big_requests, BIG, 100)
    out["big direct-1000"] = direct(args, args.big_requests // 4, BIG, 1000)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        started = time.perf_counter()
        whole = read_summary(conn, BIG, DELAY_S * 1000)
        rendered = time.perf_counter() - started
        whole_bytes = len(dumps({"success": True, "data": whole.data}))
        locks = conn.execute(
            "SELECT count(*) FROM position_receivers WHERE address = %s AND locked > 0 AND expire_ms >= %s",
            (BIG, whole.as_of_time_ms),
        ).fetchone()
    out["big whole"] = _figures([rendered * 1000])
    sizes = {
        "page of 100": _body_size(base, BIG, None),
        "page of 1,000": _body_size(base, BIG, 1000),
        "whole state at once": whole_bytes,
    }
    count = sum(whole.data["resources"][r]["delegated"]["receivers_count"] for r in ("ENERGY", "BANDWIDTH"))
    print(
        f"\nbig account: {count} receiver records, {locks[0] if locks else 0} locks not ended at the checkpoint;"
        f" body bytes: {', '.join(f'{k} {v:,}' for k, v in sizes.items())}"
    )
    _print_round(0, out)
    return out


class Writer(threading.Thread):
    """Writes operations to the busy account at a rate, as a worker would, and confirms every 3 s."""

    def __init__(self, args: argparse.Namespace, cache: redis.Redis, first_block: int) -> None:
        super().__init__(daemon=True)
        # Blocks after the folded one: a record at or below it would (rightly) drop the folded state.
        self.args, self.cache, self.block = args, cache, first_block + 1
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        interval = 1.0 / self.args.write_rate
        g = 10**9
        last_confirm = time.monotonic()
        with psycopg.connect(self.args.database_url, autocommit=True) as conn:
            next_at = time.monotonic()
            while not self.stop.is_set():
                g += 1
                if g % 4 == 0:
                    self.block += 1
                when = int((T0 + timedelta(seconds=3 * (self.block - FIRST_BLOCK))).timestamp() * 1000)
                op = Operation(
                    tx_id=_tx(g),
                    op_index=0,
                    block_num=self.block,
                    block_id=f"{self.block:064x}",
                    tx_index=g % 4,
                    block_time_ms=when,
                    contract_type="DelegateResourceContract",
                    kind="delegate",
                    owner_address=ACCOUNT,
                    resource="ENERGY",
                    amount=1_000_000,
                    receiver_address=receiver(g % self.args.receivers),
                    parent_time_ms=when - 3000,
                )
                persist_operations(conn, [op], unfreeze_delay_seconds=DELAY_S)
                invalidate_accounts(self.cache, [ACCOUNT])
                conn.execute("UPDATE listener_checkpoint SET block_num = %s, block_time_ms = %s", (self.block, when))
                self.written += 1
                if time.monotonic() - last_confirm >= 3.0:
                    confirm_blocks(conn, self.block - 1, unfreeze_delay_seconds=DELAY_S)
                    last_confirm = time.monotonic()
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    last_block = seed(args)
    cache = redis.Redis.from_url(args.cache_redis_url)
    port = args.port or free_port()
    server = start_server(args, port)
    base = f"http://127.0.0.1:{port}"
    accounts = [ACCOUNT] + [copy_address(i) for i in range(args.copies)]
    results: dict[str, list[dict[str, float]]] = {
        "cached": [],
        "uncached": [],
        "uncached-1000": [],
        "uncached-paced": [],
        "direct": [],
        "direct-1000": [],
        "writes": [],
    }
    big: dict[str, dict[str, float]] = {}
    try:
        summary = _get_json(f"{base}/api/accounts/{ACCOUNT}/summary")["data"]
        energy = summary["resources"]["ENERGY"]["delegated"]
        print(
            f"summary: as of block {summary['as_of_block']}, {energy['receivers_count']} ENERGY receiver records",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            scripts = {}
            for name, limits in (("uncached", LIMITS), ("uncached-1000", WHOLE_LIMITS)):
                paths = Path(tmp, f"{name}.txt")
                paths.write_text("".join(f"/api/accounts/{a}/summary?limit={n}\n" for n in limits for a in accounts))
                script = Path(tmp, f"{name}.lua")
                script.write_text(paths_script(paths, args.threads))
                scripts[name] = (script, len(accounts) * len(limits))
            paced = Path(tmp, "uncached-paced.lua")
            # A connection's cycle is its delay plus the answer's latency (a few ms at this rate):
            # the delay leaves room for it, and the answered rate is checked against the offered.
            delay_ms = max(1, round(args.connections * 1000 / args.paced_rate * 0.85))
            paced.write_text(scripts["uncached"][0].read_text() + _DELAY % {"ms": delay_ms})
            scripts["uncached-paced"] = (paced, scripts["uncached"][1])
            for number in range(1, args.rounds + 1):
                invalidate_accounts(cache, accounts)  # a new generation: every summary is a miss again
                for expected in ("database", "cache"):
                    source = _get_json(f"{base}/api/accounts/{ACCOUNT}/summary")["meta"]["source"]
                    assert source == expected, (source, expected)
                results["cached"].append(run_wrk(args, f"{base}/api/accounts/{ACCOUNT}/summary", None))
                for name, (script, walk) in scripts.items():
                    if name == "uncached-paced":
                        invalidate_accounts(cache, accounts)  # the same pages, misses again
                    results[name].append(run_wrk(args, base + "/", script))
                    if results[name][-1]["requests"] > walk:
                        print(f"  {name}: more requests than pages ({walk}): some were hits", flush=True)
                results["direct"].append(direct(args, args.direct, ACCOUNT, 100))
                results["direct-1000"].append(direct(args, args.direct // 4, ACCOUNT, 1000))
                _print_round(number, {k: v[-1] for k, v in results.items() if v})
            print(
                f"\nbody bytes: {_body_size(base, ACCOUNT, None):,} (first page of 100),"
                f" {_body_size(base, ACCOUNT, 1000):,} (1,000 a page: all of them)",
                flush=True,
            )
            if args.big_receivers:
                big = measure_big(args, base, cache)
            writer = Writer(args, cache, last_block)
            writer.start()
            try:
                results["writes"].append(run_wrk(args, f"{base}/api/accounts/{ACCOUNT}/summary", None))
            finally:
                writer.stop.set()
                writer.join(10)
            rate = writer.written / args.duration
            print(f"writes: {writer.written} operations written during the run ({rate:.0f}/s)")
    finally:
        stop_server(server)
        for key in cache.scan_iter(f"{PAGE_PREFIX}*", count=1000):
            cache.unlink(key)
    _report(args, results, big)
    return 0


def _print_round(number: int, results: dict[str, dict[str, float]]) -> None:
    print(f"\nround {number}\n{'run':<16} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>7}")
    for name, r in results.items():
        errors = int(r.get("non_2xx", 0) + r.get("socket_errors", 0))
        print(
            f"{name:<16} {r['rps']:>9.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {int(r['requests']):>9} {errors:>7}"
        )


def _report(
    args: argparse.Namespace, results: dict[str, list[dict[str, float]]], big: dict[str, dict[str, float]]
) -> None:
    print(
        f"\nsummary: median of {args.rounds} round(s), wrk -t{args.threads} -c{args.connections} -d{args.duration}s,"
        f" granian {args.workers} workers x {args.blocking_threads} threads, {os.cpu_count()} CPUs,"
        f" {args.ops} operations, {args.receivers} receivers"
    )
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        if not runs:
            continue
        med[name] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        m = med[name]
        print(f"{name:<16} {m['rps']:>9.0f} req/s  p50 {m['p50_ms']:>7.2f} ms  p99 {m['p99_ms']:>7.2f} ms")
    u, paced = med["uncached"], med["uncached-paced"]
    checks = [
        (f"uncached >= {TARGETS['uncached_rps']} req/s", u["rps"] >= TARGETS["uncached_rps"]),
        (
            f"uncached p99 <= {TARGETS['uncached_p99_ms']} ms at {args.paced_rate:.0f} req/s offered"
            f" ({paced['rps']:.0f} answered)",
            paced["p99_ms"] <= TARGETS["uncached_p99_ms"] and paced["rps"] >= 0.9 * args.paced_rate,
        ),
    ]
    for name, m in big.items():
        print(f"{name:<16} {m['rps']:>9.0f} req/s  p50 {m['p50_ms']:>7.2f} ms  p99 {m['p99_ms']:>7.2f} ms")
    if "big uncached" in big:
        p99 = big["big uncached"]["p99_ms"]
        checks.append((f"big account uncached p99 < {TARGETS['big_uncached_p99_ms']} ms", p99 < 50.0))
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=1_000_000, help="operations of the busy account (default 1,000,000)")
    p.add_argument("--receivers", type=int, default=500, help="receivers of its delegations (default 500)")
    p.add_argument("--copies", type=int, default=2000, help="accounts with the same positions, for misses")
    p.add_argument("--big-receivers", type=int, default=100_000, help="receivers of the big account (0: none)")
    p.add_argument("--big-requests", type=int, default=200, help="requests of each kind to the big account")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--direct", type=int, default=2000, help="read_summary calls per round in this process")
    p.add_argument("--write-rate", type=float, default=50.0, help="operations/s written during the last run")
    p.add_argument("--paced-rate", type=float, default=500.0, help="requests/s of the paced uncached run (default 500)")
    add_wrk_options(p, connections=16)
    add_granian_options(p)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench_summary")
    p.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/10")
    p.add_argument("--verbose", action="store_true", help="print wrk's own output")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
