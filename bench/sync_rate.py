"""Sync success rate: the share of the chain's operations the ledger holds, exactly (kind, amount,
resource, receiver, lock, status), on a node that fails some requests and whose block feed leaves
out 1% of the stake transactions: after the listener's first attempt, and after the scheduler's
gap reconciliation.

    .venv/bin/python -m bench.sync_rate --blocks 2000      # the recorded run
    .venv/bin/python -m bench.sync_rate --blocks 300       # a short one (CI-sized)

The simulator produces blocks as fast as it can (--block-interval 0.05) with node faults on 10% of
requests (server errors, timeouts, truncated replies, `{}` blocks, rate limits); the listener
follows from the first block. Then the chain goes quiet (empty blocks until everything is
solidified), the first attempt is counted, a scheduler runs the gap job once, and it is counted again.
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg

from harness.procs import Proc, python
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    new_ledger,
    settings_env,
    start_listener,
    start_simulator,
    start_worker,
    wait_until,
)
from harness.truth import checkpoint, ledger_rows, truth_rows
from web.app import close_app, create_app

DB_URL = "postgresql://postgres@127.0.0.1:5432/ledger_bench_sync"


def rate(sim: Simulator, client: object) -> tuple[int, int]:
    """(operations the ledger holds exactly as the chain has them, operations on the chain)."""
    held = total = 0
    for account in SIM_ACCOUNTS:
        expected = truth_rows(sim, account)
        got = set(ledger_rows(client, account))  # type: ignore[arg-type]
        held += len(expected & got)
        total += len(expected)
    return held, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2000, help="live blocks to follow")
    parser.add_argument("--hide-rate", type=float, default=0.01)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the pipeline (DBs 10, 11)")
    args = parser.parse_args()

    sim_proc, url = start_simulator(
        "--block-interval",
        "0.05",
        "--ops-per-block",
        "2",
        "--unfreeze-delay-seconds",
        "30",
        "--hide-rate",
        str(args.hide_rate),
        "--fault-rate",
        str(args.fault_rate),
        "--faults",
        "rate_limit,server_error,error_key,timeout,truncated,empty_block",
        "--suspend-seconds",
        "1",
        "--timeout-seconds",
        "3",
        "--paused",
    )
    sim = Simulator(url)
    procs: list[Proc] = [sim_proc]
    settings = new_ledger(
        DB_URL,
        f"{args.redis}/10",
        f"{args.redis}/11",
        tron_requests_per_second=0.0,
        tron_requests_per_day=0,
        unfreeze_delay_seconds=30,
    )
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"sync-{uuid.uuid4().hex[:6]}",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "POLL_INTERVAL": "0.1",
        "TRON_NODE_URL": url,
        "TRON_TIMEOUT_SECONDS": "2",
        "START_BLOCK": str(sim.status()["start_block"]),
        "GAP_SETTLE_SECONDS": "0",
        "GAP_LOOKBACK_SECONDS": str(30 * 86_400),
        "SCHEDULE_STATE_SECONDS": "0",
        "SCHEDULE_LIFECYCLE_SECONDS": "0",
        "SCHEDULE_GAP_SECONDS": "0",
    }
    app = create_app(settings.__class__(**{**settings.__dict__, "queue_name": env["QUEUE_NAME"]}))
    client = app.test_client()
    try:
        procs += [start_worker(env), start_listener(env)]
        sim.produce(1)
        sim.resume()
        started = time.monotonic()
        wait_until(lambda: sim.status()["head"] - sim.status()["start_block"] >= args.blocks, 3600, "the blocks")
        sim.pause()
        sim.http.post("/sim/faults", json={"rate": 0, "every": 0, "suspended": False})
        for _ in range(25):  # everything above is solidified after these
            sim.http.post("/sim/submit", json={"transactions": []})
        head = sim.status()["head"]
        wait_until(lambda: checkpoint(DB_URL) == head, 600, "the listener to reach the head")
        faults = sim.http.get("/sim/faults").json()["counts"]
        hidden = len(sim.http.get("/sim/hidden").json()["hidden"])
        # The workers' queue drains within seconds; wait until the count stops moving.
        last = (-1, 0)
        for _ in range(60):
            now = rate(sim, client)
            if now == last:
                break
            last = now
            time.sleep(2)
        first_held, total = last
        follow = time.monotonic() - started

        scheduler = Proc("scheduler", python("-m", "scheduler"), {**env, "SCHEDULE_GAP_SECONDS": "3600"})
        procs.append(scheduler)
        with psycopg.connect(DB_URL) as conn:

            def finished() -> bool:
                row = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'gap' AND finished_at IS NOT NULL")
                found = row.fetchone()
                conn.commit()
                return bool(found and found[0])

            wait_until(finished, 600, "the gap run")
            recovered = conn.execute("SELECT count(*) FROM recovered_operations").fetchone()
        after_held, total_after = rate(sim, client)
    finally:
        close_app(app)
        for proc in reversed(procs):
            proc.stop()
    print(
        f"sync success rate over {args.blocks} blocks ({follow:.0f}s), {total} operations, "
        f"{hidden} stake transactions hidden ({args.hide_rate:.0%}), node faults injected {sum(faults.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}):"
    )
    print(f"  first attempt (listener):   {first_held}/{total} = {first_held / total:.2%}")
    print(
        f"  after gap reconciliation:   {after_held}/{total_after} = {after_held / total_after:.2%} "
        f"({recovered[0] if recovered else 0} operations recovered)"
    )


if __name__ == "__main__":
    main()
