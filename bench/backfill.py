"""Backfill speed: index a range of simulator blocks with `python -m listener backfill`.

    .venv/bin/python -m bench.backfill --mainnet-density --blocks 2000   # the recorded run
    .venv/bin/python -m bench.backfill --blocks 10000                     # light blocks (4 unrelated tx)

Measures the command alone (fetch, parse, enqueue; the workers drain separately), with no
request-rate limit and with --rate 10 (TronGrid-sized), on the same simulated chain. Printed:
the wall-clock rate, the listener's CPU seconds per 1,000 blocks and its own rate (blocks per CPU
second, what one core would do), and beside them two parse-only ceilings from the same run: the
very replies the listener read (every block range, and the TransactionInfo of each block that needs
it), fetched again and decoded alone, in CPU seconds, by `orjson.loads` and by the skipping decoder
the listener uses (ledger.chain.skim: the fastest correct decode found). CPU-time ratios hold on a
loaded machine far better than wall-clock rates do.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid

import orjson
import urllib3

from bench.provenance import header, load_average
from harness.procs import Proc, python
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    add_density_option,
    add_ledger_options,
    new_ledger,
    settings_env,
    start_simulator,
)
from ledger.chain.node import MAX_BLOCKS_PER_REQUEST
from ledger.chain.parser import needs_transaction_info
from ledger.chain.skim import skim_block_range, skim_infos

# The shared request budget off: --rate is the limit measured.
BUDGET_OFF: dict[str, object] = {"tron_requests_per_second": 0.0, "tron_requests_per_day": 0}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_backfill(
    env: dict[str, str], first: int, last: int, rate: float | None, profile: list[str] | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `listener backfill` run; the CPU time is the child's own,
    read from the kernel when it is reaped. `profile`: a py-spy command line to run it under (its
    CPU time then counts too: a profiled run is for the profile, not for the figures)."""
    args = ["backfill", "--from-block", str(first), "--to-block", str(last), "--add-account"]
    for account in SIM_ACCOUNTS:
        args += ["--account", account]
    if rate:
        args += ["--rate", str(rate)]
    cpu_before = children_cpu()
    started = time.monotonic()
    proc = Proc("backfill", [*(profile or []), *python("-m", "listener", *args)], env)
    code = proc.popen.wait(3600)
    elapsed = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"backfill exited {code}:\n{proc.output()[-2000:]}")
    return elapsed, children_cpu() - cpu_before


def parse_ceilings(url: str, first: int, last: int) -> tuple[float, float, int]:
    """CPU seconds of `orjson.loads`, and of the skipping decoder alone (ledger.chain.skim), over the
    replies the listener reads for first..last, and their size in bytes."""
    pool = urllib3.PoolManager()
    tracked = frozenset(SIM_ACCOUNTS)
    full = skimmed = 0.0
    size = 0
    try:
        for lo in range(first, last + 1, MAX_BLOCKS_PER_REQUEST):
            hi = min(last + 1, lo + MAX_BLOCKS_PER_REQUEST)
            blocks_reply = raw_reply(pool, f"{url}/wallet/getblockbylimitnext", {"startNum": lo, "endNum": hi})
            infos_replies = []
            for block in orjson.loads(blocks_reply)["block"]:
                if needs_transaction_info(block, tracked):
                    number = block["block_header"]["raw_data"]["number"]
                    body = {"num": number}
                    infos_replies.append(raw_reply(pool, f"{url}/wallet/gettransactioninfobyblocknum", body))
            for reply, skim in [(blocks_reply, skim_block_range)] + [(item, skim_infos) for item in infos_replies]:
                size += len(reply)
                started = time.thread_time()
                orjson.loads(reply)
                middle = time.thread_time()
                skim(reply)
                full += middle - started
                skimmed += time.thread_time() - middle
    finally:
        pool.clear()
    return full, skimmed, size


def raw_reply(pool: urllib3.PoolManager, url: str, body: dict[str, int]) -> bytes:
    reply = pool.request("POST", url, body=orjson.dumps(body), headers={"Content-Type": "application/json"})
    if reply.status != 200:
        raise SystemExit(f"{url}: HTTP {reply.status}")
    return reply.data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=None, help="default 2000 with --mainnet-density, else 10000")
    parser.add_argument("--ops-per-block", type=float, default=6.0)
    add_density_option(parser)
    parser.add_argument("--limited-blocks", type=int, default=300, help="blocks for the --rate 10 run (0: none)")
    parser.add_argument("--profile", metavar="FILE", help="record a py-spy profile (collapsed stacks) of the listener")
    parser.add_argument("--py-spy", metavar="PATH", default="py-spy", help="the py-spy binary (default %(default)s)")
    add_ledger_options(parser, "ledger_bench", 12, 13)
    args = parser.parse_args()
    blocks = args.blocks or (2_000 if args.mainnet_density else 10_000)

    print(header())
    sim_proc, url = start_simulator(
        "--ops-per-block",
        str(args.ops_per_block),
        "--paused",
        history_blocks=blocks,
        mainnet_density=args.mainnet_density,
    )
    try:
        head = Simulator(url).status()["head"]
        first = head - blocks + 1
        runs = [(None, blocks)] + ([(10.0, args.limited_blocks)] if args.limited_blocks else [])
        for rate, count in runs:
            settings = new_ledger(args.database_url, args.redis_url, args.cache_redis_url, **BUDGET_OFF)
            env = {**settings_env(settings), "QUEUE_NAME": f"backfill-{uuid.uuid4().hex[:6]}", "TRON_NODE_URL": url}
            profile = None
            if args.profile and rate is None:
                profile = [
                    args.py_spy,
                    "record",
                    "--gil",
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--output",
                    args.profile,
                    "--",
                ]
            elapsed, cpu = run_backfill(env, first, first + count - 1, rate, profile)
            label = f"--rate {rate:g}" if rate else "no rate limit"
            print(f"backfill {count} blocks ({label}): {elapsed:.1f}s = {count / elapsed:,.0f} blocks/s")
            if rate is None:
                own = count / cpu
                per_1000 = cpu * 1000 / count
                print(f"listener CPU: {cpu:.1f}s = {per_1000:.2f}s per 1,000 blocks = {own:,.0f} blocks/s on one core")
                # The process's start (imports, connections, lease) is the same for any range: a
                # one-block run on a fresh ledger measures it, and what is left is the catch-up's own.
                new_ledger(args.database_url, args.redis_url, args.cache_redis_url, **BUDGET_OFF)
                _, start_cpu = run_backfill(env, first, first, None)
                steady = count / max(cpu - start_cpu, 1e-9)
                print(
                    f"  of which the process's start (a one-block run) {start_cpu:.2f}s; without it "
                    f"{(cpu - start_cpu) * 1000 / count:.2f}s per 1,000 blocks = {steady:,.0f} blocks/s"
                )
                full, skimmed, size = parse_ceilings(url, first, first + count - 1)
                print(f"parse-only ceilings over the same replies ({size / count / 1024:,.0f} KB a block):")
                for name, spent in (("orjson.loads", full), ("skipping decoder alone", skimmed)):
                    ceiling = count / spent
                    print(
                        f"  {name}: {spent * 1000 / count:.2f}s per 1,000 blocks = {ceiling:,.0f} blocks/s; "
                        f"listener / ceiling: {own / ceiling:.0%} ({steady / ceiling:.0%} without the start)"
                    )
        print(f"load average after: {load_average()}")
    finally:
        sim_proc.stop()


if __name__ == "__main__":
    main()
