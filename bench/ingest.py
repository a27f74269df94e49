"""Ingest throughput: catch up N simulator blocks end to end, beside a no-op actor's drain rate.

    .venv/bin/python -m bench.ingest --blocks 10000 --ops-per-block 6      # the recorded run
    .venv/bin/python -m bench.ingest --blocks 1000 --ops-per-block 6       # a short one

Both figures come from the same run, the same broker and the same worker shape (processes ×
threads), so their ratio holds on a noisy shared machine. Uses its own database (ledger_bench)
and Redis DB numbers 12/13.
"""

from __future__ import annotations

import argparse
import time
import uuid

import dramatiq
import psycopg
import redis

from ledger.config import load_settings
from ledger.db import migrate
from ledger.queue import create_broker
from tests.procs import Proc, python
from tests.stack import (
    SIM_ACCOUNTS,
    Simulator,
    recreate_database,
    settings_env,
    start_listener,
    start_simulator,
    start_worker,
    wait_until,
)

DB_URL = "postgresql://postgres@127.0.0.1:5432/ledger_bench"


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)")
        return int(row.fetchone()[0])  # type: ignore[index]


def noop_drain_rate(env: dict[str, str], messages: int, processes: int, threads: int) -> float:
    queue = f"bench-noop-{uuid.uuid4().hex[:6]}"
    broker = create_broker(env["REDIS_URL"])
    payload = {"tx_id": "0" * 64, "amount": 1, "owner_address": SIM_ACCOUNTS[0]}
    for _ in range(messages):
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="noop", args=(payload,), kwargs={}, options={}))
    client = redis.Redis.from_url(env["REDIS_URL"])
    worker = Proc(
        "noop-worker",
        python("-m", "dramatiq", "bench.noop_worker:setup", "--processes", str(processes), "--threads", str(threads)),
        {**env, "BENCH_NOOP_QUEUE": queue},
    )
    try:
        started = None
        while True:
            left = client.hlen(f"dramatiq:{queue}.msgs")
            if started is None and left < messages:
                started = time.monotonic()
            if left == 0:
                break
            time.sleep(0.02)
        assert started is not None
        return messages / (time.monotonic() - started)
    finally:
        worker.stop()
        broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--ops-per-block", type=float, default=6.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    recreate_database(DB_URL)
    migrate(DB_URL)
    settings = load_settings(
        {},
        database_url=DB_URL,
        redis_url="redis://127.0.0.1:6379/12",
        cache_redis_url="redis://127.0.0.1:6379/13",
        tron_requests_per_second=0.0,  # the simulator has no quota: measure the pipeline, not the budget
        tron_requests_per_day=0,
    )
    redis.Redis.from_url(settings.redis_url).flushdb()
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"bench-{uuid.uuid4().hex[:6]}",
        "LOG_LEVEL": "INFO",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "LISTENER_BATCH_BLOCKS": "100",
        "POLL_INTERVAL": "0.2",
    }

    t0 = time.monotonic()
    sim_proc, url = start_simulator(
        "--history-blocks", str(args.blocks), "--ops-per-block", str(args.ops_per_block), "--paused"
    )
    sim = Simulator(url)
    status = sim.status()
    expected = len(sim.truth()["operations"])
    print(f"simulator: {args.blocks} blocks, {expected} tracked operations, generated in {time.monotonic() - t0:.1f}s")
    try:
        ceiling = noop_drain_rate(env, min(expected, 50_000), args.processes, args.threads)
        shape = f"{args.processes} processes x {args.threads} threads"
        print(f"no-op actor drain rate: {ceiling:,.0f} messages/s ({shape})")

        env = {**env, "TRON_NODE_URL": url, "START_BLOCK": str(status["head"] - args.blocks + 1)}
        worker = start_worker(env, processes=args.processes, threads=args.threads)
        started = time.monotonic()
        listener = start_listener(env)
        try:
            wait_until(lambda: count_rows(DB_URL) >= expected, 3600, "all operations persisted", interval=0.2)
            elapsed = time.monotonic() - started
        finally:
            listener.stop()
            worker.stop()
        rate = expected / elapsed
        print(
            f"end to end: {expected} operations in {elapsed:.1f}s = {rate:,.0f} operations/s "
            f"({args.blocks / elapsed:,.0f} blocks/s)"
        )
        print(f"ratio to the no-op ceiling: {rate / ceiling:.0%}")
    finally:
        sim_proc.stop()


if __name__ == "__main__":
    main()
