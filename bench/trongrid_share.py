"""TronGrid requests per 1,000 API reads, at 0 % and 10 % gray release, on the full stack.

    .venv/bin/python -m bench.trongrid_share                                   # the recorded run
    .venv/bin/python -m bench.trongrid_share --accounts 20 --duration 20 --rate 40 --warmup 5   # CI

Starts the simulator (3-s blocks, --accounts pool accounts with history), then the listener,
workers, scheduler and web (granian, 2 workers) as the Procfile runs them, against their own
database (`ledger_bench_share`) and Redis DBs. Each process sends its own API key, so the
simulator's request count (the oracle: what TronGrid would bill) says who asked: listener, worker
(the reconciliation jobs), web (legacy path, fallback, shadow).

For each legacy share L in `--rollouts` (the accounts TronGrid answers): `rollout set 100-L`, a
warm-up of Zipf reads, then `--duration` seconds
of a paced Zipf read load (wrk) of at most `--rate` reads/s (accounts drawn with exponent `--zipf`; 75 %
records pages of the three kinds, 25 % summaries). Printed per run: reads answered, node requests by
client in the window, and TronGrid requests per 1,000 reads.

Reconciliation runs every SCHEDULE_GAP_SECONDS (600) / SCHEDULE_STATE_SECONDS (3,600), far longer
than a run: each job's first run (a scheduler runs every enabled job when it takes the lease; one
scheduler per job, so each is counted alone) is measured once before the load, as requests per
run, and amortised at the production intervals into the figure ("recon-amortised"). A first gap
run reads back GAP_LOOKBACK_SECONDS, so it costs at least what later runs do. Counts of the
worker's key inside a window are shown too, and left out of the total so a run that happens to
cross a window boundary is not counted twice. The service's own figure (`/api/monitor` ->
gray_release.dependency, from its pushed counters, without the amortised reconciliation) is printed
beside the oracle's, and the read rate at which the 0 % figure would be 10 (the target).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.api import paths_script
from harness.procs import Proc, python
from harness.servers import free_port
from harness.stack import new_ledger, settings_env, start_listener, start_simulator, start_web, start_worker, wait_until
from ledger.chain.address import to_base58
from ledger.store.accounting import checkpoint_block
from ledger.store.rollout import write_rollout
from simulator.requests import client_label

DATABASE = "ledger_bench_share"
ROLES = ("listener", "worker", "web")
TARGET_PER_1000 = 10.0


def accounts(n: int) -> list[str]:
    return [to_base58("41" + hashlib.sha256(f"bench-pool-{i}".encode()).hexdigest()[:40]) for i in range(n)]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (rank**s) for rank in range(1, n + 1)]


class Load:
    """A paced Zipf read load by wrk: `connections` connections, each waiting `delay_ms` between its
    requests (wrk's `delay()`), walking a list of paths drawn once from the Zipf distribution.

    wrk, not Python, makes the requests: on a shared 2-core machine a Python client could not keep
    up with its own schedule. The reads are wrk's 2xx count; their split by path (native, legacy,
    fallback) is the service's own count (`ledger_api_reads_total{source}`)."""

    def __init__(self, base: str, pool: list[str], rate: float, zipf: float, connections: int, workdir: Path) -> None:
        self.base = base
        self.connections = connections
        # Each connection sends one request per (delay + latency): a delay of connections/rate
        # seconds offers at most `rate` requests a second, less when the server is slow.
        self.delay_ms = max(1, int(connections * 1000 / rate))
        rng = random.Random(1)
        weights = zipf_weights(len(pool), zipf)
        lines = []
        for _ in range(20_000):
            account = rng.choices(pool, weights)[0]
            pick = rng.random()
            if pick < 0.25:
                lines.append(f"/api/accounts/{account}/summary")
            else:
                kind = "stake" if pick < 0.55 else "delegate" if pick < 0.85 else "unfreeze"
                page = 1 if rng.random() < 0.9 else 2
                lines.append(f"/api/{kind}/records?pool_account_id={account}&page={page}")
        paths = workdir / "paths.txt"
        paths.write_text("\n".join(lines) + "\n")
        self.script = workdir / "load.lua"
        self.script.write_text(paths_script(paths, 2) + f"\nfunction delay() return {self.delay_ms} end\n")
        self.reads = 0
        self.errors = 0

    def run(self, seconds: float) -> None:
        argv = ["wrk", "-t2", f"-c{self.connections}", f"-d{int(seconds)}s", "-s", str(self.script), self.base]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.errors = int(bad.group(1)) if bad else 0
        self.reads = total - self.errors


def sim_counts(node: httpx.Client) -> dict[str, int]:
    clients = node.get("/sim/requests").json()["clients"]
    out = {}
    for role in ROLES:
        out[role] = int(clients.get(client_label(f"bench-{role}", ""), {}).get("total", 0))
    out["other"] = sum(int(c["total"]) for c in clients.values()) - sum(out[r] for r in ROLES)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100, help="pool accounts (the simulator tracks them)")
    parser.add_argument("--rate", type=float, default=100.0, help="API reads per second (open loop)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per rollout percentage")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load before each measurement")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the account popularity")
    parser.add_argument(
        "--rollouts",
        default="0,10",
        help="comma-separated legacy-path percentages (each run sets the new path's share to 100 - P)",
    )
    parser.add_argument("--ops-per-block", type=float, default=2.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the stack (DBs 4 and 5)")
    parser.add_argument("--port", type=int, default=0, help="web port (0: a free one)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (each paced by a delay)")
    args = parser.parse_args()

    pool = accounts(args.accounts)
    workdir = Path(tempfile.mkdtemp(prefix="trongrid-share-"))
    args.port = args.port or free_port()
    sim_proc, sim_url = start_simulator(
        "--block-interval",
        "3",
        "--opening-state",
        "random",  # every pool account exists on chain with some stake, as a real pool's do
        "--history-blocks",
        "100",
        "--ops-per-block",
        str(args.ops_per_block),
        accounts=tuple(pool),
    )
    procs: list[Proc] = [sim_proc]
    node = httpx.Client(base_url=sim_url, timeout=30)
    db_url = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
    settings = new_ledger(db_url, f"{args.redis}/4", f"{args.redis}/5")
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"share-{uuid.uuid4().hex[:6]}",
        "TRON_NODE_URL": sim_url,
        "POOL_ACCOUNTS": ",".join(pool),
        "START_BLOCK": str(node.get("/sim/status").json()["start_block"]),
        "POLL_INTERVAL": "1.0",  # the production default
        "TRON_REQUESTS_PER_SECOND": "10",  # the budget of a free TronGrid key (the defaults)
        "TRON_REQUESTS_PER_DAY": "100000",
        "LOG_LEVEL": "WARNING",
    }
    try:
        procs.append(start_worker({**env, "TRON_API_KEY": "bench-worker", "LOG_LEVEL": "INFO"}, processes=1))
        procs.append(start_listener({**env, "TRON_API_KEY": "bench-listener", "LOG_LEVEL": "INFO"}))
        head = node.get("/sim/status").json()["head"]
        wait_until(lambda: _checkpoint(db_url) >= head, 300, "the listener to catch up", interval=0.5)
        # Reconciliation: the scheduler runs every enabled job once when it takes the lease. One
        # scheduler per job measures each job's requests per run, by the worker's key.
        per_run = {}
        for job, off in (("gap", "SCHEDULE_STATE_SECONDS"), ("state", "SCHEDULE_GAP_SECONDS")):
            node.post("/sim/requests/reset")
            calib = Proc("scheduler", python("-m", "scheduler"), {**env, off: "0", "SCHEDULE_LIFECYCLE_SECONDS": "0"})
            try:
                wait_until(functools.partial(_settled, db_url, job), 600, f"the first {job} run", interval=0.5)
                time.sleep(1.0)
                per_run[job] = sim_counts(node)["worker"]
            finally:
                calib.stop()
        recon_rate = per_run["gap"] / settings.schedule_gap_seconds + per_run["state"] / settings.schedule_state_seconds
        print(
            f"reconciliation per run: gap {per_run['gap']}, state {per_run['state']} node requests "
            f"({_last_runs(db_url)}); at SCHEDULE_GAP_SECONDS={settings.schedule_gap_seconds} and "
            f"SCHEDULE_STATE_SECONDS={settings.schedule_state_seconds}: {recon_rate:.3f} req/s amortised"
        )
        # The scheduler stays up as in production; the windows just run are not run again.
        procs.append(Proc("scheduler", python("-m", "scheduler"), env))
        procs.append(start_web({**env, "TRON_API_KEY": "bench-web", "PORT": str(args.port)}, args.port, workers=2))
        load = Load(f"http://127.0.0.1:{args.port}", pool, args.rate, args.zipf, args.connections, workdir)
        rows: list[Run] = []
        for percent in [int(p) for p in args.rollouts.split(",")]:
            with psycopg.connect(db_url, autocommit=True) as conn:
                write_rollout(conn, start_new_percent=100, new=100 - percent, by="bench")
            time.sleep(settings.rollout_refresh_seconds + 1)
            load.run(args.warmup)
            node.post("/sim/requests/reset")
            before = _service(args.port)
            started = time.monotonic()
            load.run(args.duration)
            elapsed = time.monotonic() - started
            counts = sim_counts(node)
            time.sleep(2.5)  # the web's counters are flushed every second
            after = _service(args.port)
            rows.append(
                Run(
                    percent=percent,
                    seconds=elapsed,
                    reads=load.reads,
                    counts=counts,
                    recon=recon_rate * elapsed,
                    service_requests=after["trongrid_requests"] - before["trongrid_requests"],
                    service_reads=after["api_reads"] - before["api_reads"],
                    sources={k: after["sources"][k] - before["sources"][k] for k in after["sources"]},
                    errors=load.errors,
                )
            )
    finally:
        for proc in reversed(procs):
            proc.stop()
    one, five, fifteen = os.getloadavg()
    print(
        f"\n{args.accounts} pool accounts, Zipf {args.zipf}, {args.rate:g} reads/s offered, "
        f"{args.duration:g} s per run, load average {one:.2f} / {five:.2f} / {fifteen:.2f}"
    )
    print(
        "rollout  reads/s  listener  web  worker-in-window  recon-amortised  "
        "TronGrid/1000 reads  service's own figure  answers by source"
    )
    for run in rows:
        print(run.line())
    for run in rows:
        c = run.counts
        node_rate = (c["listener"] + c["web"] + c["other"] + run.recon) / run.seconds
        print(
            f"{run.percent}%: {node_rate:.3f} TronGrid requests/s; <= {TARGET_PER_1000:g} per 1,000 reads from "
            f"{node_rate * 1000 / TARGET_PER_1000:.0f} reads/s up"
        )


@dataclass
class Run:
    percent: int
    seconds: float
    reads: int  # 200 answers
    counts: dict[str, int]  # node requests by client (the simulator's count)
    recon: float  # reconciliation requests amortised over the run
    service_requests: int
    service_reads: int
    sources: dict[str, int]  # the service's count of records answers by path, and summaries
    errors: int  # non-2xx answers

    def per_thousand(self) -> float:
        c = self.counts
        return (c["listener"] + c["web"] + c["other"] + self.recon) * 1000 / max(self.reads, 1)

    def line(self) -> str:
        per = self.per_thousand()
        own = self.service_requests * 1000 / max(self.service_reads, 1)
        verdict = ("met" if per <= TARGET_PER_1000 else "MISSED") if self.percent == 0 else "-"
        extra = f" non-2xx={self.errors}" if self.errors else ""
        c = self.counts
        return (
            f"{self.percent:>6}%  {self.reads / self.seconds:7.1f}  {c['listener']:8d}  {c['web']:3d}  "
            f"{c['worker']:16d}  {self.recon:15.1f}  {per:10.2f} ({verdict:6s})  {own:20.2f}  {self.sources}{extra}"
        )


def _checkpoint(url: str) -> int:
    with psycopg.connect(url) as conn:
        mark = checkpoint_block(conn)
        return -1 if mark is None else mark


def _settled(url: str, job: str) -> bool:
    """Every message of the job's run done, or dead (a dead one never counts as done)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT messages, done FROM job_runs WHERE job = %s", (job,)).fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters WHERE actor_name LIKE %s", (f"%{job}%",)).fetchone()
    return row is not None and row[1] + (dead[0] if dead else 0) >= row[0]


def _last_runs(url: str) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT job, messages FROM job_runs ORDER BY id").fetchall()
    return ", ".join(f"{job}: {n} message(s)" for job, n in rows)


def _service(port: int) -> dict[str, Any]:
    data = httpx.get(f"http://127.0.0.1:{port}/api/monitor", timeout=30).json()["data"]["gray_release"]
    total = data["dependency"]["total"]
    return {
        "trongrid_requests": int(total["trongrid_requests"]),
        "api_reads": int(total["api_reads"]),
        "sources": total["api_reads_by_source"],
    }


if __name__ == "__main__":
    main()
