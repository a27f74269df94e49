"""The gray release's figures for /metrics and the status page: rollout, shadow counts, and the
external dependency figures: TronGrid requests caused by reads per 1,000 API reads, the share of
reads served without any external call, and the listener's requests per block on their own.

Both counts come from the counters every process pushes to the broker Redis (ledger/ops/metrics.py):
`ledger_node_requests_total{caller}` from every TRON node client (ingest: the listener; jobs: the
workers' reconciliation; legacy, fallback, shadow: the web's reads; TRON_NODE_URL is TronGrid in
production), and `ledger_api_reads_total` from the web processes (records and summary answers, web/paths.py). The
figure is taken over MONITOR_WINDOW_SECONDS and, separately, since the counters began.
"""

from __future__ import annotations

from typing import Any

import redis

from ledger.chain.node import BACKFILL, INGEST, JOBS, READ_CALLERS
from ledger.config import Settings
from ledger.ops.metrics import read_totals, read_window, sum_samples
from web.paths import API_READS, LEGACY_ERRORS, Paths
from web.shadow import COMPARISONS

NODE_REQUESTS = "ledger_node_requests_total"
LISTENER_BLOCKS = "ledger_listener_blocks_total"
SHADOW_RESULTS = ("match", "mismatch", "error", "dropped")


def per_thousand(requests: float, reads: float) -> float | None:
    return None if reads <= 0 else round(requests * 1000 / reads, 3)


def gray_release(broker: redis.Redis, settings: Settings, paths: Paths) -> dict[str, Any]:
    """The status page's part; `{"error": ...}` parts when the counters' Redis cannot be read."""
    out: dict[str, Any] = {
        "rollout": paths.rollout.to_json(),
        "rollout_read": paths.rollout_read,
        "legacy_path": paths.node is not None,
        "fallback_per_minute": settings.fallback_requests_per_minute if paths.fallback_budget else 0,
    }
    try:
        totals = read_totals(broker)
        window = read_window(broker, max(1, settings.monitor_window_seconds // 60))
    except redis.RedisError as exc:
        out["shadow"] = out["dependency"] = {"error": type(exc).__name__}
        return out
    out["shadow"] = {r: int(sum_samples(totals, COMPARISONS, [f'result="{r}"'])) for r in SHADOW_RESULTS}
    out["dependency"] = {
        "window_seconds": max(1, settings.monitor_window_seconds // 60) * 60,
        "window": _figure(window),
        "total": _figure(totals),
    }
    return out


def _figure(values: dict[str, float]) -> dict[str, Any]:
    """The plan's figure is about reads: the requests reads cause (the legacy path, the fallback and
    shadow comparisons) per 1,000 reads, and the share of reads served without any external call.
    The listener's polling is not caused by reads; it is its own figure, requests per block."""
    requests = sum_samples(values, NODE_REQUESTS)
    reads = sum_samples(values, API_READS)
    by_source = {
        source: int(sum_samples(values, API_READS, [f'source="{source}"']))
        for source in ("native", "legacy", "fallback")
    }
    by_caller = {
        caller: int(sum_samples(values, NODE_REQUESTS, [f'caller="{caller}"']))
        for caller in (*READ_CALLERS, INGEST, JOBS, BACKFILL)
    }
    by_caller["other"] = int(requests) - sum(by_caller.values())
    read_requests = sum(by_caller[c] for c in READ_CALLERS)
    # A read made an external call when the legacy path or the fallback answered it, when the
    # legacy path was tried and failed (answered natively after), or when it was compared in shadow.
    compared = sum(sum_samples(values, COMPARISONS, [f'result="{r}"']) for r in ("match", "mismatch", "error"))
    legacy_failed = sum_samples(values, LEGACY_ERRORS, ['path="legacy"'])
    with_call = min(reads, by_source["legacy"] + by_source["fallback"] + legacy_failed + compared)
    blocks = sum_samples(values, LISTENER_BLOCKS)
    return {
        "trongrid_requests": int(requests),
        "requests_by_caller": by_caller,
        "api_reads": int(reads),
        "api_reads_by_source": by_source,
        "read_requests": read_requests,
        "read_requests_per_1000_reads": per_thousand(read_requests, reads),
        "reads_with_external_call": int(with_call),
        "external_calls_avoided": None if reads <= 0 else round(1 - with_call / reads, 6),
        "ingest_requests": by_caller[INGEST],
        "ingest_blocks": int(blocks),
        "ingest_requests_per_block": None if blocks <= 0 else round(by_caller[INGEST] / blocks, 3),
    }
