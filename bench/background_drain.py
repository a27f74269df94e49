"""Background drain rate by WORKER_BACKGROUND_THREADS: what the live lane's reserved threads cost a backfill.

    .venv/bin/python -m bench.background_drain --backlog 20000 --rounds 2     # the recorded run
    .venv/bin/python -m bench.background_drain --backlog 2000 --rounds 1      # a short one

A worker process lets at most WORKER_BACKGROUND_THREADS of its threads work on background messages
(backfill, reconciliation: workers/main.py, _BackgroundLane), so live messages always find a free
thread. Reconciliation jobs are paced by the request budget and lose nothing by it; a backfill's
drain is CPU- and database-bound and may. This measures it: `--backlog` history operations are put
on the background queue (as `listener backfill` sends them), then the Procfile's worker (2
processes x 4 threads) drains them, once per setting in `--limits`, alternating over `--rounds` so
the shared machine's load falls on each alike. Figures: operations/s per setting and each one's
ratio to the last (the most threads background may have).
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bench.live_first import history
from harness.stack import add_ledger_options, new_ledger, settings_env, start_worker
from ledger.coordination.queue import BrokerSink, background_queue, create_broker


def drain_once(args: argparse.Namespace, limit: int) -> float:
    """Seconds the worker takes to persist the whole backlog with background limited to `limit` threads."""
    settings = new_ledger(args.database_url, args.redis_url, args.cache_redis_url, queue_name="drain")
    broker = create_broker(settings.redis_url)
    sink = BrokerSink(broker, background_queue(settings.queue_name), threads=8)
    try:
        sink.publish(history(args.backlog, seed=f"drain-{limit}"))
    finally:
        sink.close()
        broker.close()
    env = {**settings_env(settings), "WORKER_BACKGROUND_THREADS": str(limit)}
    started = time.monotonic()
    worker = start_worker(env, processes=args.processes, threads=args.threads)
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)"
                ).fetchone()
                if row is not None and row[0] >= args.backlog:
                    return time.monotonic() - started
                if time.monotonic() - started > args.timeout:
                    raise SystemExit(f"limit {limit}: {row[0] if row else 0} of {args.backlog} after {args.timeout} s")
                time.sleep(0.1)
    finally:
        worker.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.background_drain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backlog", type=int, default=20_000, help="operations on the background queue")
    parser.add_argument("--limits", default="2,3", help="WORKER_BACKGROUND_THREADS values, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="drains per setting, alternating")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one drain may take")
    add_ledger_options(parser, "ledger_bench_drain", 12, 13)
    args = parser.parse_args(argv)
    limits = [int(x) for x in args.limits.split(",")]
    seconds: dict[int, list[float]] = {limit: [] for limit in limits}
    for round_no in range(args.rounds):
        for limit in limits:
            took = drain_once(args, limit)
            seconds[limit].append(took)
            print(f"round {round_no + 1}, limit {limit}: {args.backlog:,} operations in {took:.1f} s", flush=True)
    print(f"\nbackground drain, {args.processes} x {args.threads} threads, {args.backlog:,} operations a drain")
    print(f"{'WORKER_BACKGROUND_THREADS':>26} {'median s':>9} {'ops/s':>8} {'ratio':>7}")
    best = args.backlog / statistics.median(seconds[limits[-1]])
    for limit in limits:
        rate = args.backlog / statistics.median(seconds[limit])
        print(f"{limit:>26} {statistics.median(seconds[limit]):>9.1f} {rate:>8,.0f} {rate / best:>7.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
