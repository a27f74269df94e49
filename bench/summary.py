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

Prints req/s, p50 and p99 of each, against the targets (uncached p99 <= 20 ms, >= 500 req/s).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from workers.persist import confirm_blocks, persist_operations

ACCOUNT = to_base58("41" + "5a" * 20)
FIRST_BLOCK = 50_000_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
DELAY_S = 14 * 86_400
TARGETS = {"uncached_p99_ms": 20.0, "uncached_rps": 500}


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
        if have and have[0] == args.ops and copies and copies[0] == args.copies + 1:
            _refold(conn, last_block)
            return last_block
        print(f"seeding {args.ops} operations of {ACCOUNT} over {args.receivers} receivers (COPY) ...", flush=True)
        started = time.monotonic()
        conn.execute(
            "TRUNCATE stake_records, delegate_records, unfreeze_records, pool_accounts, positions,"
            " position_openings, listener_checkpoint"
        )
        _copy_operations(conn, args)
        conn.execute("ANALYZE stake_records")
        conn.execute("ANALYZE delegate_records")
        print(f"  copied in {time.monotonic() - started:.1f}s; folding positions ...", flush=True)
        conn.execute("INSERT INTO pool_accounts (address, label) VALUES (%s, 'bench')", (ACCOUNT,))
        started = time.monotonic()
        with conn.transaction():
            positions.fold(conn, last_block, DELAY_S * 1000)
        row = conn.execute("SELECT state::text FROM positions WHERE address = %s", (ACCOUNT,)).fetchone()
        assert row is not None
        pos = Position.from_json(row[0])
        print(
            f"  folded in {time.monotonic() - started:.1f}s: {len(pos.pairs)} (receiver, resource) records, "
            f"{len(pos.lots)} lots, state {len(row[0])} bytes",
            flush=True,
        )
        # The copies: other pool accounts whose folded state is the busy account's.
        with conn.cursor().copy("COPY pool_accounts (address, label) FROM STDIN") as copy:
            for i in range(args.copies):
                copy.write_row((copy_address(i), "bench-copy"))
        conn.execute(
            "INSERT INTO positions (address, block_num, state)"
            " SELECT p.address, %s, (SELECT state FROM positions WHERE address = %s)"
            " FROM pool_accounts p WHERE p.label = 'bench-copy'",
            (last_block, ACCOUNT),
        )
        ms = int((T0 + timedelta(seconds=3 * (last_block - FIRST_BLOCK))).timestamp() * 1000)
        conn.execute(
            "INSERT INTO listener_checkpoint (name, block_num, block_id, block_time_ms) VALUES (%s, %s, 'b', %s)",
            (MAIN_CHECKPOINT, last_block, ms),
        )
        conn.execute("UPDATE chain_state SET head_block = %s, solid_block = %s", (last_block, last_block))
    return last_block


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


def direct(args: argparse.Namespace, count: int) -> dict[str, float]:
    """read_summary of the busy account in a loop: latencies in ms."""
    times = []
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        for _ in range(count):
            started = time.perf_counter()
            read_summary(conn, ACCOUNT, DELAY_S * 1000)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "rps": count / (sum(times) / 1000),
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[int(len(times) * 0.99)],
        "requests": count,
    }


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
    results: dict[str, list[dict[str, float]]] = {"cached": [], "uncached": [], "direct": [], "writes": []}
    try:
        summary = _get_json(f"{base}/api/accounts/{ACCOUNT}/summary")["data"]
        receivers = sum(len(summary["resources"][r]["delegated"]["receivers"]) for r in ("ENERGY", "BANDWIDTH"))
        print(f"summary: as of block {summary['as_of_block']}, {receivers} receiver records", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            paths = Path(tmp, "paths.txt")
            paths.write_text("".join(f"/api/accounts/{a}/summary\n" for a in accounts))
            script = Path(tmp, "uncached.lua")
            script.write_text(paths_script(paths, args.threads))
            for number in range(1, args.rounds + 1):
                invalidate_accounts(cache, accounts)  # a new generation: every summary is a miss again
                for expected in ("database", "cache"):
                    source = _get_json(f"{base}/api/accounts/{ACCOUNT}/summary")["meta"]["source"]
                    assert source == expected, (source, expected)
                results["cached"].append(run_wrk(args, f"{base}/api/accounts/{ACCOUNT}/summary", None))
                results["uncached"].append(run_wrk(args, base + "/", script))
                results["direct"].append(direct(args, args.direct))
                _print_round(number, {k: v[-1] for k, v in results.items() if v})
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
    _report(args, results)
    return 0


def _print_round(number: int, results: dict[str, dict[str, float]]) -> None:
    print(f"\nround {number}\n{'run':<10} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9} {'errors':>7}")
    for name, r in results.items():
        errors = int(r.get("non_2xx", 0) + r.get("socket_errors", 0))
        print(
            f"{name:<10} {r['rps']:>9.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {int(r['requests']):>9} {errors:>7}"
        )


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
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
        print(f"{name:<10} {m['rps']:>9.0f} req/s  p50 {m['p50_ms']:>7.2f} ms  p99 {m['p99_ms']:>7.2f} ms")
    u = med["uncached"]
    checks = [
        (f"uncached p99 <= {TARGETS['uncached_p99_ms']} ms", u["p99_ms"] <= TARGETS["uncached_p99_ms"]),
        (f"uncached >= {TARGETS['uncached_rps']} req/s", u["rps"] >= TARGETS["uncached_rps"]),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=1_000_000, help="operations of the busy account (default 1,000,000)")
    p.add_argument("--receivers", type=int, default=500, help="receivers of its delegations (default 500)")
    p.add_argument("--copies", type=int, default=5000, help="accounts with the same positions, for misses")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--direct", type=int, default=2000, help="read_summary calls per round in this process")
    p.add_argument("--write-rate", type=float, default=50.0, help="operations/s written during the last run")
    add_wrk_options(p, connections=16)
    add_granian_options(p)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench_summary")
    p.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/10")
    p.add_argument("--verbose", action="store_true", help="print wrk's own output")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
