"""Ingest throughput: catch up N simulator blocks end to end, beside a no-op actor's drain rate.

    .venv/bin/python -m bench.ingest --mainnet-density --runs 3            # the recorded run
    .venv/bin/python -m bench.ingest --blocks 10000 --ops-per-block 6      # light blocks (4 unrelated tx)

Both figures come from the same run, the same broker and the same worker shape (processes ×
threads), so their ratio holds on a noisy shared machine; the output starts with the commit, the
CPU model and the load average, and every run names the load average it started at. Uses its own
database (--database-url, default ledger_bench: dropped and re-created) and Redis DBs (--redis-url for the broker,
--cache-redis-url: both flushed), so point them at ones you do not need.

--profile DIR --py-spy PATH records a py-spy profile (collapsed stacks) of the listener and of the
workers for the end-to-end part: DIR/listener.txt and DIR/worker.txt.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
import uuid
from pathlib import Path

import dramatiq
import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from bench import procfs
from bench.provenance import header, load_average
from harness.procs import Proc, python
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    add_density_option,
    add_ledger_options,
    new_ledger,
    settings_env,
    start_listener,
    start_simulator,
    start_worker,
    wait_until,
)
from ledger.coordination.queue import create_broker


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)")
        return int(row.fetchone()[0])  # type: ignore[index]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid` and its descendants still running (the worker group)."""
    if not Path("/proc").is_dir():
        return float("nan")
    return procfs.usage(pid)[1]


def postgres_cpu_seconds(db_url: str) -> float:
    """CPU time of the PostgreSQL backends connected to the benchmark's database right now (the
    pools' connections live for the whole run; a backend that already exited is not counted)."""
    if not Path("/proc").is_dir():
        return float("nan")
    name = str(conninfo_to_dict(db_url)["dbname"])
    total = 0.0
    for pid, fields in procfs.running():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {name} " in title:
            total += procfs.cpu_seconds(fields)
    return total


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
    parser.add_argument("--blocks", type=int, default=None, help="default 2000 with --mainnet-density, else 10000")
    parser.add_argument("--ops-per-block", type=float, default=6.0)
    add_density_option(parser)
    parser.add_argument("--runs", type=int, default=1, help="runs on the same chain; the median ratio is the figure")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    add_ledger_options(parser, "ledger_bench", 12, 13)
    parser.add_argument("--profile", metavar="DIR", default=None, help="write py-spy profiles here (needs --py-spy)")
    parser.add_argument("--profile-idle", action="store_true", help="profile waiting threads too (wall time)")
    parser.add_argument("--py-spy", metavar="PATH", default="py-spy", help="the py-spy binary (default %(default)s)")
    args = parser.parse_args()
    blocks = args.blocks or (2_000 if args.mainnet_density else 10_000)
    print(header())

    t0 = time.monotonic()
    # Rendering ~500 KB of replies a block would make the simulator the pipeline's bottleneck
    # (1 s of its CPU per 1,000 operations): render them before the clock starts.
    sim_proc, url = start_simulator(
        "--ops-per-block",
        str(args.ops_per_block),
        "--paused",
        history_blocks=blocks,
        mainnet_density=args.mainnet_density,
        prerender=args.mainnet_density,
    )
    sim = Simulator(url)
    status = sim.status()
    expected = len(sim.truth()["operations"])
    density = "mainnet density" if args.mainnet_density else "light blocks"
    print(
        f"simulator: {blocks} blocks ({density}), {expected} tracked operations, "
        f"generated in {time.monotonic() - t0:.1f}s"
    )
    ratios = []
    try:
        for run in range(1, args.runs + 1):
            load = load_average()
            ceiling, rate, elapsed, cpu = run_once(args, url, status["head"] - blocks + 1, expected, sim_proc)
            ratios.append(rate / ceiling)
            print(
                f"run {run} (load average before {load}): no-op actor drain {ceiling:,.0f} messages/s "
                f"({args.processes} processes x {args.threads} threads); end to end {expected} operations in "
                f"{elapsed:.1f}s = {rate:,.0f} operations/s ({blocks / elapsed:,.0f} blocks/s); "
                f"ratio {rate / ceiling:.0%}"
            )
            print(
                "  CPU per 1,000 operations: "
                + ", ".join(f"{name} {seconds * 1000 / expected:.2f}s" for name, seconds in cpu.items())
                + " (so far as /proc shows them: Linux only)"
            )
        print(f"ratio to the no-op ceiling, median of {len(ratios)}: {statistics.median(ratios):.0%}")
        print(f"load average after: {load_average()}")
    finally:
        sim_proc.stop()


def run_once(
    args: argparse.Namespace, url: str, first_block: int, expected: int, sim_proc: Proc
) -> tuple[float, float, float, dict[str, float]]:
    """One run on a fresh ledger and queue: (no-op drain messages/s, operations/s, seconds, CPU
    seconds by part)."""
    db_url = args.database_url
    settings = new_ledger(
        db_url,
        args.redis_url,
        args.cache_redis_url,
        tron_requests_per_second=0.0,  # the simulator has no quota: measure the pipeline, not the budget
        tron_requests_per_day=0,
    )
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"bench-{uuid.uuid4().hex[:6]}",
        "LOG_LEVEL": "INFO",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "LISTENER_BATCH_BLOCKS": "100",
        "POLL_INTERVAL": "0.2",
    }
    ceiling = noop_drain_rate(env, min(expected, 50_000), args.processes, args.threads)
    env = {**env, "TRON_NODE_URL": url, "START_BLOCK": str(first_block)}
    sim_cpu = cpu_seconds(sim_proc.popen.pid)
    worker = start_worker(env, processes=args.processes, threads=args.threads)
    started = time.monotonic()
    listener = start_listener(env)
    profilers = _profile(args, listener, worker) if args.profile else []
    try:
        wait_until(lambda: count_rows(db_url) >= expected, 3600, "all operations persisted", interval=0.2)
        elapsed = time.monotonic() - started
        cpu = {
            "listener": cpu_seconds(listener.popen.pid),
            "workers": cpu_seconds(worker.popen.pid),
            "simulator": cpu_seconds(sim_proc.popen.pid) - sim_cpu,
            "PostgreSQL": postgres_cpu_seconds(db_url),
        }
    finally:
        for profiler in profilers:
            profiler.kill(signal.SIGINT)  # py-spy writes its file on SIGINT
        for profiler in profilers:
            profiler.popen.wait(60)
        listener.stop()
        worker.stop()
    return ceiling, expected / elapsed, elapsed, cpu


def _profile(args: argparse.Namespace, listener: Proc, worker: Proc) -> list[Proc]:
    """py-spy on the listener and on the worker group (its children included), collapsed stacks."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    profilers = []
    for name, proc in (("listener", listener), ("worker", worker)):
        argv = [args.py_spy, "record", "--format", "raw", "--rate", "50", "--nonblocking", "--subprocesses"]
        argv += ["--idle"] if args.profile_idle else []
        argv += ["--pid", str(proc.popen.pid), "--output", str(out / f"{name}.txt")]
        profilers.append(Proc(f"py-spy-{name}", argv, {}))
    return profilers


if __name__ == "__main__":
    main()
