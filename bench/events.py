"""What the event log costs ingest: the ingest benchmark's catch-up with events on and off.

    .venv/bin/python -m bench.events --blocks 4000 --runs 3

Each run makes a fresh ledger and catches up the same simulated chain end to end (listener ->
workers -> PostgreSQL, as bench/ingest.py), once with the event triggers off
(sql/027_statement_event_triggers.sql: disabled on the record tables) and once on, in alternating
order, and prints operations/s of each, their ratio (the target: events cost at most 10 %), the
events written per second while ingesting, and how long after the last record the relay had
numbered every event (so the feed and the webhooks had them). The figure is the median ratio.
Uses its own database and Redis DBs (as bench/ingest.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg

from bench.ingest import count_rows
from bench.provenance import header, load_average
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    add_ledger_options,
    new_ledger,
    settings_env,
    start_listener,
    start_simulator,
    start_worker,
    wait_until,
)

_TRIGGERS = (
    ("stake_records", "stake_records_events_insert"),
    ("stake_records", "stake_records_events_update"),
    ("delegate_records", "delegate_records_events_insert"),
    ("delegate_records", "delegate_records_events_update"),
)


def events_state(url: str) -> tuple[int, int]:
    """(events written, events not numbered yet)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*), count(*) FILTER (WHERE seq IS NULL) FROM events").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def run_once(args: argparse.Namespace, url: str, first_block: int, expected: int, events: bool) -> dict[str, float]:
    db_url = args.database_url
    settings = new_ledger(
        db_url, args.redis_url, args.cache_redis_url, tron_requests_per_second=0.0, tron_requests_per_day=0
    )
    if not events:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for table, trigger in _TRIGGERS:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"bench-{uuid.uuid4().hex[:6]}",
        "LOG_LEVEL": "INFO",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "LISTENER_BATCH_BLOCKS": "100",
        "POLL_INTERVAL": "0.2",
        "TRON_NODE_URL": url,
        "START_BLOCK": str(first_block),
    }
    worker = start_worker(env, processes=args.processes, threads=args.threads)
    started = time.monotonic()
    listener = start_listener(env)
    try:
        wait_until(lambda: count_rows(db_url) >= expected, 3600, "all operations persisted", interval=0.2)
        elapsed = time.monotonic() - started
        written, _ = events_state(db_url)
        numbered_after = 0.0
        if events:
            wait_until(lambda: events_state(db_url)[1] == 0, 600, "every event numbered", interval=0.1)
            numbered_after = time.monotonic() - started - elapsed
            written, _ = events_state(db_url)
    finally:
        listener.stop()
        worker.stop()
    return {"rate": expected / elapsed, "elapsed": elapsed, "events": written, "numbered_after": numbered_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4_000)
    parser.add_argument("--ops-per-block", type=float, default=6.0)
    parser.add_argument(
        "--runs", type=int, default=3, help="pairs of runs (off and on); the median ratio is the figure"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    add_ledger_options(parser, "ledger_bench", 12, 13)
    args = parser.parse_args()
    print(header())
    sim_proc, url = start_simulator(
        "--history-blocks", str(args.blocks), "--ops-per-block", str(args.ops_per_block), "--paused"
    )
    sim = Simulator(url)
    status = sim.status()
    expected = len(sim.truth()["operations"])
    first = status["head"] - args.blocks + 1
    print(f"simulator: {args.blocks} blocks, {expected} tracked operations")
    ratios = []
    try:
        for run in range(1, args.runs + 1):
            load = load_average()
            order = (False, True) if run % 2 else (True, False)
            results = {on: run_once(args, url, first, expected, on) for on in order}
            off, on = results[False], results[True]
            ratios.append(on["rate"] / off["rate"])
            print(
                f"run {run} (load average before {load}): events off {off['rate']:,.0f} operations/s, "
                f"on {on['rate']:,.0f} operations/s: ratio {on['rate'] / off['rate']:.1%}; "
                f"{on['events']:,.0f} events written at {on['events'] / on['elapsed']:,.0f} events/s, "
                f"all numbered {on['numbered_after']:.1f}s after the last record"
            )
        median = statistics.median(ratios)
        verdict = "met" if median >= 0.9 else "MISSED"
        print(f"ingest with events / without, median of {len(ratios)}: {median:.1%} (target >= 90 %: {verdict})")
        print(f"load average after: {load_average()}")
    finally:
        sim_proc.stop()


if __name__ == "__main__":
    main()
