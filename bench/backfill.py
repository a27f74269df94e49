"""Backfill speed: index a range of simulator blocks with `python -m listener backfill`.

    .venv/bin/python -m bench.backfill --blocks 10000       # the recorded run
    .venv/bin/python -m bench.backfill --blocks 2000        # a short one

Measures the command alone (fetch, parse, enqueue; the workers drain separately), with no
request-rate limit and with --rate 10 (TronGrid-sized), on the same simulated chain.
"""

from __future__ import annotations

import argparse
import time
import uuid

from harness.procs import Proc, python
from harness.stack import SIM_ACCOUNTS, Simulator, new_ledger, settings_env, start_simulator

DB_URL = "postgresql://postgres@127.0.0.1:5432/ledger_bench"


def run_backfill(env: dict[str, str], first: int, last: int, rate: float | None) -> float:
    args = ["backfill", "--from-block", str(first), "--to-block", str(last), "--add-account"]
    for account in SIM_ACCOUNTS:
        args += ["--account", account]
    if rate:
        args += ["--rate", str(rate)]
    started = time.monotonic()
    proc = Proc("backfill", python("-m", "listener", *args), env)
    code = proc.popen.wait(3600)
    if code != 0:
        raise SystemExit(f"backfill exited {code}:\n{proc.output()[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--ops-per-block", type=float, default=6.0)
    parser.add_argument("--limited-blocks", type=int, default=300, help="blocks for the --rate 10 run")
    args = parser.parse_args()

    sim_proc, url = start_simulator(
        "--history-blocks", str(args.blocks), "--ops-per-block", str(args.ops_per_block), "--paused"
    )
    try:
        head = Simulator(url).status()["head"]
        first = head - args.blocks + 1
        for rate, count in ((None, args.blocks), (10.0, args.limited_blocks)):
            settings = new_ledger(
                DB_URL,
                "redis://127.0.0.1:6379/12",
                "redis://127.0.0.1:6379/13",
                tron_requests_per_second=0.0,  # the shared budget off: --rate is the limit measured
                tron_requests_per_day=0,
            )
            env = {**settings_env(settings), "QUEUE_NAME": f"backfill-{uuid.uuid4().hex[:6]}", "TRON_NODE_URL": url}
            elapsed = run_backfill(env, first, first + count - 1, rate)
            label = f"--rate {rate:g}" if rate else "no rate limit"
            print(f"backfill {count} blocks ({label}): {elapsed:.1f}s = {count / elapsed:,.0f} blocks/s")
    finally:
        sim_proc.stop()


if __name__ == "__main__":
    main()
