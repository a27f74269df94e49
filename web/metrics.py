"""GET /metrics: Prometheus text format, the same whichever web process or host answers.

Nothing is counted in the web process itself. Counters come from the hash every worker and listener
process flushes to the broker's Redis (ledger/ops/metrics.py: why not prometheus-client's multiprocess
mode), cache lookups from the cache Redis' own counts (ledger/store/cache.py), and gauges are computed
now from PostgreSQL and Redis (web/monitor.py). So granian's worker processes, and any number of
worker hosts, need no scrape target of their own: scrape any web instance.

prometheus-client only writes the exposition format here (and parses it in the tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ledger.domain import LISTENER_STATES
from ledger.ops.metrics import read_totals
from web.dependency import gray_release
from web.monitoring import current_snapshot
from web.paths import current_paths
from web.resources import resources

bp = Blueprint("metrics", __name__)

# Families pushed by processes: name -> (type, help). Samples of other names are ignored.
PUSHED = {
    "ledger_worker_messages": ("counter", "Worker message attempts by actor and outcome (ok, retried, dead)."),
    "ledger_worker_first_attempts": ("counter", "First attempts of worker messages by actor and result."),
    "ledger_worker_message_duration_seconds": ("histogram", "Time an actor took per attempt."),
    "ledger_worker_stale_messages": (
        "counter",
        "Messages of a lease term no longer current, dropped unapplied, by actor (a takeover's leftovers).",
    ),
    "ledger_node_requests": (
        "counter",
        "Requests every process (listener, workers, web) made to the TRON node, by endpoint and outcome.",
    ),
    "ledger_node_request_duration_seconds": ("histogram", "TRON node request duration."),
    "ledger_listener_blocks": ("counter", "Blocks the active listener processed."),
    "ledger_listener_operations": ("counter", "Stake operations the active listener enqueued."),
    "ledger_api_reads": ("counter", "Records and summary answers of every web process, by route and source."),
    "ledger_shadow_comparisons": (
        "counter",
        "Shadow comparisons of native records answers with the legacy path, by result.",
    ),
    "ledger_legacy_errors": ("counter", "Legacy-path reads TronGrid did not answer, by path (legacy, fallback)."),
    "ledger_webhook_deliveries": ("counter", "Webhook delivery attempts of every worker, by result (sent, failed)."),
}
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@bp.get("/metrics")
def metrics() -> Response:
    body = generate_latest(_Collected(list(_families())))
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0], headers={"Cache-Control": "no-store"})


class _Collected:
    """What generate_latest needs of a registry: `collect()`."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _families() -> Iterator[Metric]:
    res = resources()
    up = Metric("ledger_metrics_source_up", "1 if this source of figures could be read at scrape time.", "gauge")
    try:
        totals = read_totals(res.broker_redis)
    except Exception:  # noqa: BLE001 - a dead broker Redis must not fail the whole scrape
        totals = {}
        up.add_sample("ledger_metrics_source_up", {"source": "pushed_counters"}, 0)
    else:
        up.add_sample("ledger_metrics_source_up", {"source": "pushed_counters"}, 1)
    yield from _pushed(totals)

    snap = current_snapshot()
    for part in ("listener", "data_latency", "cache", "sync", "queues"):
        up.add_sample("ledger_metrics_source_up", {"source": part}, 0 if "error" in snap[part] else 1)
    yield up
    stats = res.pages.stats()
    if stats["hits"] is not None:
        lookups = Metric("ledger_cache_lookups", "API cache lookups of every web process, by result.", "counter")
        for result, key in (("hit", "hits"), ("local_hit", "local_hits"), ("miss", "misses")):
            lookups.add_sample("ledger_cache_lookups_total", {"result": result}, float(stats[key] or 0))
        yield lookups
    yield from _gauges(snap)
    yield from _gray_release(res)


def _gray_release(res: Any) -> Iterator[Metric]:
    part = gray_release(res.broker_redis, res.settings, current_paths())
    rollout = Metric("ledger_rollout_percent", "Gray release setting this process follows, by path.", "gauge")
    rollout.add_sample("ledger_rollout_percent", {"path": "new"}, part["rollout"]["new_percent"])
    rollout.add_sample("ledger_rollout_percent", {"path": "legacy"}, part["rollout"]["legacy_percent"])
    rollout.add_sample("ledger_rollout_percent", {"path": "shadow"}, part["rollout"]["shadow_percent"])
    yield rollout
    dependency = part["dependency"]
    if "error" not in dependency:
        window = dependency["window"]
        yield from _gauge(
            "ledger_trongrid_requests_per_1000_reads",
            "TronGrid (node) requests caused by API reads (legacy path, fallback, shadow comparisons) per 1,000"
            " reads, over the monitor window; the listener's are ledger_ingest_node_requests_per_block.",
            window["read_requests_per_1000_reads"],
        )
        yield from _gauge(
            "ledger_external_calls_avoided_ratio",
            "Share of API reads served without any external call (no legacy, fallback or shadow request).",
            window["external_calls_avoided"],
        )
        yield from _gauge(
            "ledger_ingest_node_requests_per_block",
            "The listener's node requests per block it processed, over the monitor window.",
            window["ingest_requests_per_block"],
        )


def _pushed(totals: dict[str, float]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for field, value in sorted(totals.items()):
        name, _, label_text = field.partition("{")
        family = next(
            (
                name[: len(name) - len(s)]
                for s in _SUFFIXES
                if name.endswith(s) and name[: len(name) - len(s)] in PUSHED
            ),
            None,
        )
        if family is None:
            continue
        if family not in families:
            kind, doc = PUSHED[family]
            families[family] = Metric(family, doc, kind)
        labels = {k: _unescape(v) for k, v in _LABEL.findall(label_text)}
        families[family].add_sample(name, labels, value)
    yield from families.values()


def _gauges(snap: dict[str, Any]) -> Iterator[Metric]:
    listener, latency, cache, sync, queues = (
        snap["listener"],
        snap["data_latency"],
        snap["cache"],
        snap["sync"],
        snap["queues"],
    )
    if "error" not in listener:
        status = Metric(
            "ledger_listener_status", "1 for the listener's current status (online, stale, offline).", "gauge"
        )
        for name in ("online", "stale", "offline"):
            status.add_sample("ledger_listener_status", {"status": name}, 1 if listener["status"] == name else 0)
        yield status
        if listener["state"] is not None:
            states = Metric(
                "ledger_listener_state",
                "1 for what the online listener is doing (following, catching_up, node_behind, node_unreachable,"
                " rate_limited, failing, starting).",
                "gauge",
            )
            for name in LISTENER_STATES:
                states.add_sample("ledger_listener_state", {"state": name}, 1 if listener["state"] == name else 0)
            yield states
            yield from _gauge(
                "ledger_node_behind_checkpoint_blocks",
                "How far the node's head is below the listener's checkpoint (0: not behind); absent when unknown.",
                listener["node_behind_by"] or 0,
            )
        yield from _gauge(
            "ledger_listener_heartbeat_age_seconds",
            "Seconds since the active listener's heartbeat.",
            listener["beat_age_s"],
        )
        yield from _gauge(
            "ledger_chain_head_block", "The node's head block as the listener last saw it.", listener["head_block"]
        )
        yield from _gauge(
            "ledger_processed_block", "The last block the listener processed (checkpoint).", listener["processed_block"]
        )
        yield from _gauge(
            "ledger_blocks_behind_head",
            "Head block minus processed block; absent when unknown (listener down or not reading).",
            listener["blocks_behind"],
        )
    if "error" not in latency:
        ms = latency["ms"]
        yield from _gauge(
            "ledger_data_latency_seconds",
            "Chain head time minus last processed block time, plus the time since the node last showed that head;"
            " absent when unknown.",
            None if ms is None else ms / 1000,
        )
        lag = Metric("ledger_persist_lag_seconds", "Block time to row written, records of the last hour.", "gauge")
        for q in ("p50", "p95", "p99"):
            if latency["persist_lag_ms"][q] is not None:
                lag.add_sample(
                    "ledger_persist_lag_seconds", {"quantile": "0." + q[1:]}, latency["persist_lag_ms"][q] / 1000
                )
        yield lag
    if "error" not in cache:
        yield from _gauge(
            "ledger_cache_hit_ratio",
            "Cache hit ratio over the monitor window, micro-cache hits included.",
            cache["hit_rate"],
        )
        yield from _gauge("ledger_cache_keys", "Keys in the cache Redis database.", cache["keys"])
        yield from _gauge("ledger_cache_memory_bytes", "Memory used by the cache Redis.", cache["memory_bytes"])
    if "error" not in sync:
        yield from _gauge(
            "ledger_sync_success_ratio",
            "First-attempt success ratio of worker messages over the monitor window.",
            sync["success_rate"],
        )
        yield from _gauge("ledger_dead_letters", "Dead letters recorded in PostgreSQL.", sync["dead_letters"])
    if "error" not in queues:
        depth = Metric("ledger_queue_messages", "Messages in the broker by state.", "gauge")
        for state in ("ready", "delayed", "in_flight", "dead"):
            if queues[state] is not None:  # in flight is unknown on RabbitMQ
                depth.add_sample("ledger_queue_messages", {"state": state}, queues[state])
        yield depth
        hooks_depth = Metric(
            "ledger_webhook_queue_messages", "Webhook delivery messages in the broker by state.", "gauge"
        )
        for state, count in queues.get("webhooks", {}).items():  # a snapshot shared by an older web lacks it
            if count is not None:
                hooks_depth.add_sample("ledger_webhook_queue_messages", {"state": state}, count)
        yield hooks_depth
    if isinstance(snap["shortfall"], list):
        shortfall = Metric(
            "ledger_shortfall_sun", "What the ledger's arithmetic was short of against the chain, per account.", "gauge"
        )
        for row in snap["shortfall"]:
            for what, sun in row["shortfall"].items():
                shortfall.add_sample("ledger_shortfall_sun", {"account": row["account"], "what": what}, float(sun))
        yield shortfall
    hooks = snap["webhooks"]
    if "pending" in hooks:
        deliveries = Metric("ledger_webhook_deliveries_open", "Webhook deliveries not made yet, by state.", "gauge")
        deliveries.add_sample("ledger_webhook_deliveries_open", {"state": "pending"}, hooks["pending"])
        deliveries.add_sample("ledger_webhook_deliveries_open", {"state": "dead"}, hooks["dead"])
        yield deliveries
        yield from _gauge(
            "ledger_webhook_oldest_undelivered_seconds",
            "Age of the oldest event a webhook subscription has not received yet (pending or dead).",
            hooks["oldest_undelivered_s"] or 0.0,
        )
    watermark = snap["persisted_watermark"]
    if "persisted_block" in watermark:
        yield from _gauge(
            "ledger_persisted_watermark_block",
            "Every block up to this one has all its operations stored.",
            watermark["persisted_block"],
        )


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is None:
        return
    metric = Metric(name, doc, "gauge")
    metric.add_sample(name, {}, float(value))
    yield metric


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
