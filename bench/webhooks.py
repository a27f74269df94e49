"""Webhook delivery through a long receiver outage: harness/webhook_scenario.py with minutes of outage.

    .venv/bin/python -m bench.webhooks --outage 120 --operations 1000

1,000 operations flow through a real listener and workers while the only subscriber (a local HTTP
receiver) is down for --outage seconds; then it answers 500 to 10 % of requests and drops 2 % of
answers. Prints the scenario's outcome (events, requests, refusals, lost answers, duplicates, how
long after the receiver's return the last event arrived) and whether every check held: every event
delivered, every signature valid, each event accepted once, duplicates only re-sends of lost answers.
Uses its own database and Redis DBs (dropped / flushed).
"""

from __future__ import annotations

import argparse
import sys
import uuid

from bench.provenance import header, load_average
from harness import webhook_scenario
from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, add_ledger_options, new_ledger, settings_env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the receiver is down")
    parser.add_argument("--operations", type=int, default=1_000)
    parser.add_argument("--error-rate", type=float, default=0.10)
    parser.add_argument("--lose-rate", type=float, default=0.02)
    add_ledger_options(parser, "ledger_bench_webhooks", 12, 13)
    args = parser.parse_args()
    print(header())
    print(f"load average before: {load_average()}")
    settings = new_ledger(
        args.database_url,
        args.redis_url,
        args.cache_redis_url,
        tron_requests_per_second=0.0,
        tron_requests_per_day=0,
        unfreeze_delay_seconds=30,
    )
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"bench-{uuid.uuid4().hex[:6]}",
        "POLL_INTERVAL": "0.1",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
    }
    procs: list[Proc] = []
    try:
        outcome = webhook_scenario.run(
            settings,
            env,
            procs,
            outage=args.outage,
            operations=args.operations,
            error_rate=args.error_rate,
            lose_rate=args.lose_rate,
            timeout=max(600.0, args.outage * 5),
        )
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=10)
    print(
        f"{outcome.operations} operations, {outcome.events} events; receiver down {outcome.outage_s:g}s; "
        f"{outcome.requests} requests: {outcome.accepted} accepted, {outcome.refused} answered 500, "
        f"{outcome.lost} answers lost; {outcome.duplicates} duplicates; every event delivered "
        f"{outcome.took_s:g}s after the receiver came back"
    )
    problems = outcome.problems()
    print("checks: " + ("all held" if not problems else "; ".join(problems)))
    print(f"load average after: {load_average()}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
