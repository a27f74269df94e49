"""The cost of counting cache lookups per minute (for the monitor's windowed hit rate) on the hit path.

Runs, interleaved in one process against one Redis, the cache's read script as it is and the same
script without the per-minute counts (the version before them), each through `PageCache.fetch` on a
hot page with the micro-cache off, so every lookup is one Redis round trip. Prints hits/s of each
and their ratio.

    .venv/bin/python -m bench.cache_read --redis-url redis://127.0.0.1:6379/15 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import time
from typing import Any

import redis

from ledger.store import cache
from ledger.store.cache import Fill, PageCache


def _without_minute_counts(script: str) -> str:
    """ledger/store/cache.py's read script as it was before the per-minute counts: without the block that
    counts the local hits (its argument came with them) and the lines that touch the minute's hash."""
    script = re.sub(r"^if ARGV\[7\] ~= '0' then\n.*?^end\n", "", script, count=1, flags=re.M | re.S)
    return "".join(line for line in script.splitlines(keepends=True) if "minute" not in line and "clock" not in line)


_BEFORE = _without_minute_counts(cache._READ)


class _Before(PageCache):
    sha = hashlib.sha1(_BEFORE.encode()).hexdigest()

    def _read(self, keys: list[str], args: list[object]) -> list[Any]:
        reply = self._call("EVALSHA", self.sha, len(keys), *keys, *args[:6])
        assert isinstance(reply, list)
        return reply


def rate(pages: PageCache, seconds: float) -> float:
    load = lambda: Fill(b"page", b"page", 60)  # noqa: E731
    pages.fetch("Tbench", "p1", load)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(200):
            pages.fetch("Tbench", "p1", load)
        n += 200
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    assert "ARGV[7]" not in _BEFORE and "minute" in cache._READ, (
        "the read script changed: update _without_minute_counts"
    )
    client = redis.Redis.from_url(args.redis_url)
    client.script_load(_BEFORE)
    now, before = PageCache(client), _Before(client)
    results: dict[str, list[float]] = {"with per-minute counts": [], "before": []}
    for _ in range(args.rounds):
        results["before"].append(rate(before, args.seconds))
        results["with per-minute counts"].append(rate(now, args.seconds))
    for name, values in results.items():
        print(
            f"{name:24s} {statistics.median(values):9,.0f} hits/s  (rounds: {', '.join(f'{v:,.0f}' for v in values)})"
        )
    ratio = statistics.median(results["with per-minute counts"]) / statistics.median(results["before"])
    print(f"ratio (with / before)    {ratio:.3f}")
    client.delete("ledger:stats", "ledger:ver:Tbench")


if __name__ == "__main__":
    main()
