"""Freshness: block timestamp -> first visible in the API, while following the head at 3 s blocks.

    .venv/bin/python -m bench.freshness --duration 300     # the recorded run
    .venv/bin/python -m bench.freshness --duration 60      # a short one

Runs the real simulator, listener, worker and web server, polls the API's first pages every 50 ms
and notes when each new record first shows. Uses database ledger_bench and Redis DBs 12/13.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import datetime

import httpx
import redis

from ledger.config import load_settings
from ledger.db import migrate
from tests.stack import (
    SIM_ACCOUNTS,
    recreate_database,
    settings_env,
    start_listener,
    start_simulator,
    start_web,
    start_worker,
)

DB_URL = "postgresql://postgres@127.0.0.1:5432/ledger_bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measurement")
    parser.add_argument("--block-interval", type=float, default=3.0)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the listener's POLL_INTERVAL")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()

    recreate_database(DB_URL)
    migrate(DB_URL)
    settings = load_settings({}, database_url=DB_URL, redis_url="redis://127.0.0.1:6379/12",
                             cache_redis_url="redis://127.0.0.1:6379/13")
    redis.Redis.from_url(settings.redis_url).flushdb()
    redis.Redis.from_url(settings.cache_redis_url).flushdb()
    env = {**settings_env(settings), "QUEUE_NAME": f"fresh-{uuid.uuid4().hex[:6]}", "LOG_LEVEL": "INFO",
           "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS), "POLL_INTERVAL": str(args.poll_interval)}
    sim, url = start_simulator("--block-interval", str(args.block_interval), "--ops-per-block", "3")
    env["TRON_NODE_URL"] = url
    procs = [sim, start_worker(env), start_listener(env), start_web(env, args.port)]
    seen: dict[tuple[str, int], float] = {}
    lags: list[float] = []
    http = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=5)
    try:
        time.sleep(2 * args.block_interval)  # let the listener reach the head
        first_poll = True
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            for account in SIM_ACCOUNTS:
                for path in ("/api/stake/records", "/api/delegate/records"):
                    body = http.get(path, params={"pool_account_id": account, "limit": 50}).json()
                    now_ms = time.time() * 1000
                    for row in body.get("data", []):
                        key = (row["tx_id"], row["op_index"])
                        if key in seen:
                            continue
                        seen[key] = now_ms
                        if not first_poll:  # rows already there at the start say nothing about lag
                            block_ms = datetime.fromisoformat(row["block_time"]).timestamp() * 1000
                            lags.append((now_ms - block_ms) / 1000)
            first_poll = False
            time.sleep(0.05)
    finally:
        for proc in reversed(procs):
            proc.stop()
    if not lags:
        raise SystemExit("no new records were seen")
    print(f"freshness over {args.duration:.0f}s at {args.block_interval}s blocks, listener POLL_INTERVAL "
          f"{args.poll_interval}s: {len(lags)} records, p50 {statistics.median(lags):.2f}s, "
          f"p99 {percentile(lags, 0.99):.2f}s, max {max(lags):.2f}s")


if __name__ == "__main__":
    main()
