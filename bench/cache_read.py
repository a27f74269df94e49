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
import statistics
import time
from typing import Any

import redis

from ledger import cache
from ledger.cache import Fill, PageCache

# ledger/cache.py's read script without the per-minute hash and the local-hit argument.
_BEFORE = (
    cache._READ.replace(
        """local clock = redis.call('TIME')
local minute = ARGV[5] .. ':m:' .. math.floor(clock[1] / 60)
if ARGV[7] ~= '0' then
    redis.call('HINCRBY', ARGV[5], 'local_hits', ARGV[7])
    redis.call('HINCRBY', minute, 'local_hits', ARGV[7])
end
redis.call('EXPIRE', minute, 7200)
""",
        "",
    )
    .replace("    redis.call('HINCRBY', minute, 'hits', 1)\n", "")
    .replace("redis.call('HINCRBY', minute, 'misses', 1)\n", "")
)


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
    assert _BEFORE != cache._READ and "minute" not in _BEFORE, "the read script changed: update _BEFORE"
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
