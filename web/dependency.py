"""The gray release's figures for /metrics and the status page: rollout, shadow counts, and the
external dependency figure, TronGrid requests per 1,000 API reads.

Both counts come from the counters every process pushes to the broker Redis (ledger/ops/metrics.py):
`ledger_node_requests_total` from every TRON node client (listener, the workers' reconciliation
jobs, the web's legacy, fallback and shadow reads; TRON_NODE_URL is TronGrid in production), and
`ledger_api_reads_total` from the web processes (records and summary answers, web/paths.py). The
figure is taken over MONITOR_WINDOW_SECONDS and, separately, since the counters began.
"""

from __future__ import annotations

from typing import Any

import redis

from ledger.config import Settings
from ledger.ops.metrics import read_totals, read_window, sum_samples
from web.paths import API_READS, Paths
from web.shadow import COMPARISONS

NODE_REQUESTS = "ledger_node_requests_total"
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
    requests = sum_samples(values, NODE_REQUESTS)
    reads = sum_samples(values, API_READS)
    by_source = {
        source: int(sum_samples(values, API_READS, [f'source="{source}"']))
        for source in ("native", "legacy", "fallback")
    }
    return {
        "trongrid_requests": int(requests),
        "api_reads": int(reads),
        "api_reads_by_source": by_source,
        "trongrid_per_1000_reads": per_thousand(requests, reads),
    }
