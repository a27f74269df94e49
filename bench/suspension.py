"""What a rate-limit suspension costs a node client whose threads all keep asking.

    .venv/bin/python -m bench.suspension                      # 8 threads, 60 s, both budgets
    .venv/bin/python -m bench.suspension --threads 4 --duration 20

TronGrid answers "suspended for N s" and extends the suspension for every request made during it.
The simulator does the same (a rate-limit refusal on every `--every`-th request, `--suspend`
seconds). Threads of one node client ask for the head block header as fast as they are let,
through the shared request budget on a private Redis: once as for an own node (no quota: only the
suspension is shared) and once with a TronGrid-sized quota (10/s, burst 5). Printed per run:
requests answered, suspensions the simulator started, refusals, and the extensions among them
(refusals after the first of each suspension: requests the client sent while suspended).
"""

from __future__ import annotations

import argparse
import threading
import time

from harness.servers import PrivateRedis
from harness.stack import Simulator, start_simulator
from ledger.chain.node import NodeUnavailable, TronNode
from ledger.coordination.budget import BudgetLimits, Priority, create_budget


def run(
    url: str, redis_url: str, limits: BudgetLimits, *, threads: int, duration: float, every: int, suspend: float
) -> dict[str, float]:
    sim = Simulator(url)
    node = TronNode(url, budget=create_budget(redis_url, limits, max_wait=60.0), priority=Priority.LIVE)
    sim.http.post("/sim/faults", json={"suspended": False, "reset_counts": True})
    sim.http.post("/sim/faults", json={"every": every, "kinds": ["rate_limit"], "suspend_seconds": suspend})
    answered = [0] * threads
    failed = [0] * threads
    stop = time.monotonic() + duration

    def ask(i: int) -> None:
        while time.monotonic() < stop:
            try:
                node.head_header()
                answered[i] += 1
            except NodeUnavailable:
                failed[i] += 1

    workers = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sim.http.post("/sim/faults", json={"every": 0})
    view = sim.http.get("/sim/faults").json()
    node.close()
    refusals, suspensions = int(view["counts"]["rate_limit"]), int(view["suspensions"])
    return {
        "answered": sum(answered),
        "gave_up": sum(failed),
        "suspensions": suspensions,
        "refusals": refusals,
        "extensions": refusals - suspensions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--every", type=int, default=200, help="a rate-limit refusal every N-th request")
    parser.add_argument("--suspend", type=float, default=2.0, help="suspension seconds")
    args = parser.parse_args()
    redis_server = PrivateRedis()
    redis_server.start()
    proc, url = start_simulator("--paused", "--history-blocks", "20")
    try:
        for name, limits in (
            ("own node (no quota)", BudgetLimits(per_second=0, per_day=0)),
            ("TronGrid quota 10/s", BudgetLimits(per_second=10, burst=5, per_day=0)),
        ):
            figures = run(
                url,
                redis_server.url(),
                limits,
                threads=args.threads,
                duration=args.duration,
                every=args.every,
                suspend=args.suspend,
            )
            shown = ", ".join(f"{key} {value:g}" for key, value in figures.items())
            print(f"{name}, {args.threads} threads, {args.duration:g} s: {shown}", flush=True)
    finally:
        proc.kill()
        redis_server.close()


if __name__ == "__main__":
    main()
