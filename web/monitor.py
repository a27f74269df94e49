"""The monitor's figures, each measured where it happens (nothing here is a constant or a guess).

- listener: status from the heartbeat rows listener processes write (listener/heartbeat.py):
  `online` while the active one beat within LISTENER_STALE_SECONDS, `stale` up to
  LISTENER_OFFLINE_SECONDS, `offline` after that or when no listener ever beat.
- data latency: the chain head's time as the node reported it minus the time of the last processed
  block, plus how long ago the listener last looked (its heartbeat age), so a stopped listener's
  latency grows instead of freezing; and block -> persisted lag percentiles of the records stored
  in the last hour (`created_at - block_time`).
- cache: hits (Redis and in-process micro-cache) and misses per minute from the cache Redis
  (ledger/store/cache.py), summed over MONITOR_WINDOW_SECONDS; key count and memory from Redis itself.
- sync: first-attempt success rate of worker messages over the window (ledger/ops/metrics.py), and
  the dead-letter count.
- queues: ready, delayed, in flight and dead messages in the broker (ledger/coordination/inflight.py).
- persisted watermark, shortfall and the scheduler's last runs appear once their tables exist
  (`_optional` parts): until then they are reported as unavailable, never invented.

Every part is computed on its own: one that fails is reported as `{"error": ...}` and the others
still answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis

from ledger.config import Settings
from ledger.coordination.inflight import other_depths, queue_depths
from ledger.coordination.queue import background_queue, webhook_queue
from ledger.domain import (
    LISTENER_FAILING,
    LISTENER_NODE_BEHIND,
    LISTENER_NODE_UNREACHABLE,
    LISTENER_RATE_LIMITED,
    LISTENER_READING,
)
from ledger.ops.metrics import read_totals, read_window, sum_samples
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.cache import read_cache_window
from ledger.store.deadletters import dead_letter_counts
from ledger.store.jobruns import last_runs
from ledger.store.webhooks import DELIVERIES_METRIC, delivery_figures
from web.drift import comparisons

log = logging.getLogger(__name__)

ONLINE, STALE, OFFLINE = "online", "stale", "offline"


class Unavailable(Exception):
    """A part whose data does not exist in this database yet (e.g. before its migration)."""


# A listener that does not report its state (None) reads the chain as far as anyone can tell.
_READING = {None, *LISTENER_READING}


def listener_status(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT holder, role, term, extract(epoch FROM now() - beat_at), head_block, head_time, processed_block,"
        " processed_time, state, state_detail, state_since, extract(epoch FROM now() - head_seen_at)"
        " FROM listener_heartbeats WHERE name = %s ORDER BY beat_at DESC",
        (MAIN_CHECKPOINT,),
    ).fetchall()
    lease = conn.execute("SELECT holder, term FROM listener_terms WHERE name = %s", (MAIN_CHECKPOINT,)).fetchone()
    current_term = lease[1] if lease else None
    # A process that was active under an older term (stopped, or fenced) is "former", not active.
    instances = [
        {
            "holder": r[0],
            "role": "former" if r[1] == "active" and r[2] != current_term else r[1],
            "term": r[2],
            "beat_age_s": round(float(r[3]), 3),
        }
        for r in rows
        if float(r[3]) < settings.listener_offline_seconds
    ]
    actives = [r for r in rows if r[1] == "active"]
    # The lease's holder if it beats; else the last one that did (it may have died holding it).
    active = next((r for r in actives if r[2] == current_term), actives[0] if actives else None)
    if active is None:
        return {
            "status": OFFLINE,
            "active_holder": lease[0] if lease else None,
            "beat_age_s": None,
            "instances": instances,
            "state": None,
            "state_detail": "no listener has been active",
            "state_since": None,
            "head_block": None,
            "head_time": None,
            "head_seen_age_s": None,
            "processed_block": None,
            "processed_time": None,
            "blocks_behind": None,
            "blocks_behind_unknown": "no listener has been active: no chain head seen",
            "node_behind_by": None,
        }
    age = float(active[3])
    if age < settings.listener_stale_seconds:
        status = ONLINE
    elif age < settings.listener_offline_seconds:
        status = STALE
    else:
        status = OFFLINE
    head_block, head_time, processed_block, processed_time = active[4], active[5], active[6], active[7]
    state, detail, since, seen_age = active[8], active[9], active[10], active[11]
    node_behind_by = None
    if state == LISTENER_NODE_BEHIND and head_block is not None and processed_block is not None:
        node_behind_by = processed_block - head_block
    # A figure is given only when it is current; otherwise it is unknown, and says why.
    unknown = None
    if status != ONLINE:
        unknown = f"listener {status}: no heartbeat for {age:.0f} s"
    elif state not in _READING:
        unknown = f"listener {state.replace('_', ' ')}: {detail}" if detail else f"listener {state}"
    elif head_block is None or processed_block is None:
        unknown = "no chain head seen yet" if head_block is None else "no block processed yet"
    return {
        "status": status,
        "active_holder": active[0],
        "term": active[2],
        "beat_age_s": round(age, 3),
        "instances": instances,
        "state": state if status == ONLINE else None,
        "state_detail": detail if status == ONLINE else unknown,
        "state_since": _iso(since),
        "head_block": head_block,
        "head_time": _iso(head_time),
        "head_seen_age_s": None if seen_age is None else round(float(seen_age), 3),
        "processed_block": processed_block,
        "processed_time": _iso(processed_time),
        "blocks_behind": None if unknown else max(0, head_block - processed_block),
        "blocks_behind_unknown": unknown,
        "node_behind_by": node_behind_by if status == ONLINE else None,
    }


def data_latency(conn: psycopg.Connection, listener: dict[str, Any]) -> dict[str, Any]:
    """Chain head time minus the last processed block's time, plus how long ago the node last
    showed that head (the heartbeat's age for a listener that does not say): a listener that stopped,
    or cannot reach its node, has a latency that grows instead of freezing. Unknown while the node
    is behind the checkpoint: the chain's head is then not known at all."""
    head_time, processed_time = listener["head_time"], listener["processed_time"]
    age = listener["head_seen_age_s"] if listener.get("head_seen_age_s") is not None else listener["beat_age_s"]
    latency_ms = None
    unknown = None
    if listener.get("state") == LISTENER_NODE_BEHIND:
        unknown = listener["state_detail"]
    elif head_time is None or processed_time is None or age is None:
        unknown = "no chain head or processed block reported yet"
    else:
        behind = datetime.fromisoformat(head_time) - datetime.fromisoformat(processed_time)
        latency_ms = max(0, round(behind.total_seconds() * 1000 + age * 1000))
    return {"ms": latency_ms, "unknown": unknown, "persist_lag_ms": persist_lag(conn)}


def persist_lag(conn: psycopg.Connection, window: str = "1 hour") -> dict[str, Any]:
    """Block time -> row written, percentiles over the records stored in the last `window`.

    Exact, and its cost grows with the records of that window (BRIN on created_at finds them):
    measured 1.3 s for 270k records in the hour on the loaded 2-core VM, milliseconds at the few
    thousand an hour of a pool operator.
    """
    row = conn.execute(
        "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lag) FROM ("
        " SELECT extract(epoch FROM created_at - block_time) * 1000 AS lag FROM stake_records"
        f"  WHERE created_at > now() - interval '{window}'"
        " UNION ALL"
        " SELECT extract(epoch FROM created_at - block_time) * 1000 FROM delegate_records"
        f"  WHERE created_at > now() - interval '{window}') AS lags"
    ).fetchone()
    assert row is not None
    count, pct = row
    if not count:
        return {"records": 0, "p50": None, "p95": None, "p99": None}
    return {"records": count, "p50": round(pct[0]), "p95": round(pct[1]), "p99": round(pct[2])}


def freshness_series(conn: psycopg.Connection, minutes: int = 60) -> list[dict[str, Any]]:
    """Per minute of the last `minutes`: the worst latency sampled and the blocks behind."""
    rows = conn.execute(
        "SELECT date_trunc('minute', sampled_at), max(latency_ms), max(head_block - processed_block)"
        " FROM freshness_samples WHERE sampled_at > now() - make_interval(mins => %s) GROUP BY 1 ORDER BY 1",
        (minutes,),
    ).fetchall()
    return [{"minute": _iso(r[0]), "latency_ms": int(r[1]), "blocks_behind": int(r[2])} for r in rows]


def cache_figures(cache: redis.Redis, settings: Settings) -> dict[str, Any]:
    minutes = max(1, settings.monitor_window_seconds // 60)
    window = read_cache_window(cache, minutes)
    hits, local_hits, misses = window["hits"], window["local_hits"], window["misses"]
    lookups = hits + local_hits + misses
    info = cache.info("memory")
    return {
        "window_s": minutes * 60,
        "hits": hits,
        "local_hits": local_hits,
        "misses": misses,
        "hit_rate": round((hits + local_hits) / lookups, 4) if lookups else None,
        "keys": int(cache.dbsize()),
        "memory_bytes": int(info["used_memory"]),
    }


def sync_figures(conn: psycopg.Connection, broker: redis.Redis, settings: Settings) -> dict[str, Any]:
    minutes = max(1, settings.monitor_window_seconds // 60)
    window = read_window(broker, minutes)
    ok = sum_samples(window, "ledger_worker_first_attempts_total", ['result="ok"'])
    failed = sum_samples(window, "ledger_worker_first_attempts_total", ['result="failed"'])
    dead = sum_samples(window, "ledger_worker_messages_total", ['outcome="dead"'])
    first = ok + failed
    return {
        "window_s": minutes * 60,
        "first_attempts": int(first),
        "first_attempt_ok": int(ok),
        "success_rate": round(ok / first, 4) if first else None,
        "dead_in_window": int(dead),
        "dead_letters": dead_letter_counts(conn)["total"],
    }


def queue_figures(broker: redis.Redis, settings: Settings, other_broker: Any = None) -> dict[str, Any]:
    """Queue depths of the live queue and its background queue (backfill), summed, from the Redis
    broker's structures or from `other_broker` when it is not Redis; `live` has the live queue's own,
    `webhooks` the webhook deliveries' queue's (not in the sum: deliveries to a receiver that is
    down wait there for hours, and the ledger's own queues are idle all the same)."""

    def depths_of(queue: str) -> dict[str, int | None]:
        depths = queue_depths(broker, queue) if other_broker is None else other_depths(other_broker, queue)
        return {"ready": depths.ready, "delayed": depths.delayed, "in_flight": depths.in_flight, "dead": depths.dead}

    out: dict[str, Any] = {}
    for queue in (settings.queue_name, background_queue(settings.queue_name)):
        one = depths_of(queue)
        if not out:
            out = {**one, "live": dict(one)}
            continue
        for key, value in one.items():
            out[key] = None if value is None or out[key] is None else out[key] + value
    out["webhooks"] = depths_of(webhook_queue(settings.queue_name))
    return out


def webhook_figures(conn: psycopg.Connection, broker: redis.Redis) -> dict[str, Any]:
    """Webhook deliveries: sent and failed attempts (every worker's pushed counters), waiting and dead
    deliveries and the age of the oldest event not delivered (ledger/store/webhooks.py)."""
    if not _has_column(conn, "webhook_deliveries", "status"):
        raise Unavailable("no webhooks in this database")
    totals = read_totals(broker)
    return {
        "sent": int(sum_samples(totals, DELIVERIES_METRIC, ['result="sent"'])),
        "failed": int(sum_samples(totals, DELIVERIES_METRIC, ['result="failed"'])),
        **delivery_figures(conn),
    }


def persisted_watermark(conn: psycopg.Connection) -> dict[str, Any]:
    """The block up to which every operation is in PostgreSQL (the accounting work's column)."""
    if not _has_column(conn, "listener_checkpoint", "persisted_block"):
        raise Unavailable("no persisted watermark in this database")
    row = conn.execute(
        "SELECT block_num, persisted_block, persisted_at FROM listener_checkpoint WHERE name = %s",
        (MAIN_CHECKPOINT,),
    ).fetchone()
    if row is None:
        return {"checkpoint": None, "persisted_block": None, "persisted_at": None}
    return {"checkpoint": row[0], "persisted_block": row[1], "persisted_at": _iso(row[2])}


# Accounts the shortfall part lists at most: the monitor answers every few seconds per open status
# page, and a pool of 200,000 accounts made it 14.6 MB. Accounts with a shortfall come first;
# `shortfall_accounts` (snapshot) says how many there are in all.
SHORTFALL_ROWS = 100


def shortfall(conn: psycopg.Connection, limit: int = SHORTFALL_ROWS) -> list[dict[str, Any]]:
    """Per pool account: what the ledger's arithmetic was short of against the chain's figures (sun);
    at most `limit` accounts, those with a shortfall first, then by id.

    Read from the positions the summary work keeps (`positions.state`, key "d": what -> sun the
    arithmetic was short of); an account without a shortfall has an empty map. `opening`: where its
    positions start (`{"source", "block"}`, as the summary's `meta.opening`), None without one: its
    figures then count only the records seen since it was added. `compared`: its last comparison
    with the chain's account state (web/drift.py's `comparisons`: when, at which block, the result,
    and why the last attempt did not compare), None where the comparisons' table does not exist yet.
    """
    if not _has_column(conn, "positions", "state"):
        raise Unavailable("no positions (shortfall) in this database")
    rows = conn.execute(
        "SELECT a.address, p.block_num, p.state::jsonb -> 'd', o.source, o.block_num FROM pool_accounts a"
        " LEFT JOIN positions p ON p.address = a.address LEFT JOIN position_openings o ON o.address = a.address"
        " ORDER BY coalesce(p.state::jsonb -> 'd', '{}'::jsonb) = '{}'::jsonb, a.id LIMIT %s",
        (limit,),
    ).fetchall()
    listed = [r[0] for r in rows]
    has_table = _has_column(conn, "chain_comparisons", "block")
    compared = {c["account"]: c for c in comparisons(conn, listed)} if has_table else {}
    return [
        {
            "account": r[0],
            "block": r[1],
            "shortfall": r[2] or {},
            "opening": None if r[3] is None else {"source": r[3], "block": r[4]},
            "compared": compared_view(compared.get(r[0])),
        }
        for r in rows
    ]


def shortfall_accounts(conn: psycopg.Connection) -> dict[str, int]:
    """How many pool accounts there are, and how many have a shortfall (the list shows SHORTFALL_ROWS)."""
    if not _has_column(conn, "positions", "state"):
        raise Unavailable("no positions (shortfall) in this database")
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE coalesce(p.state::jsonb -> 'd', '{}'::jsonb) <> '{}'::jsonb)"
        " FROM pool_accounts a LEFT JOIN positions p ON p.address = a.address"
    ).fetchone()
    assert row is not None
    return {"accounts": int(row[0]), "with_shortfall": int(row[1]), "listed": min(int(row[0]), SHORTFALL_ROWS)}


def compared_view(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """One account's last comparison with the chain, as the status page shows it."""
    if row is None:
        return None
    return {"at": _iso(row["compared_at"]), "block": row["block"], "result": row["result"], "reason": row["reason"]}


def scheduler_runs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The scheduler's last run per job (job_runs: ledger/store/jobruns.py)."""
    if not _has_column(conn, "job_runs", "job"):
        raise Unavailable("no scheduler in this database")
    out = []
    for run in last_runs(conn, per_job=1):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run["result"].items()))
        state = "finished" if run["finished_at"] else f"{run['done']}/{run['messages']} done"
        missing = [f"{i['account'] or '-'} ({i['reason'] or 'sent ' + str(i['sends']) + 'x'})" for i in run["not_done"]]
        out.append(
            {
                "job": run["job"],
                "last_run": _iso(run["window_start"]),
                "finished_at": _iso(run["finished_at"]),
                "result": f"{state}{'; ' + counts if counts else ''}",
                # Named, as the run's accounting keeps them (at most 20, the first ones).
                "not_done": missing,
            }
        )
    return out


def snapshot(
    conn: psycopg.Connection,
    broker: redis.Redis,
    cache: redis.Redis,
    settings: Settings,
    *,
    other_broker: Any = None,
) -> dict[str, Any]:
    """Every figure, each part computed on its own (see the module docstring)."""
    out: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat()}
    out["listener"] = _part(lambda: listener_status(conn, settings))
    listener = out["listener"]
    out["data_latency"] = _part(lambda: data_latency(conn, listener)) if "error" not in listener else listener
    out["cache"] = _part(lambda: cache_figures(cache, settings))
    out["sync"] = _part(lambda: sync_figures(conn, broker, settings))
    out["queues"] = _part(lambda: queue_figures(broker, settings, other_broker))
    out["persisted_watermark"] = _part(lambda: persisted_watermark(conn))
    out["shortfall"] = _part(lambda: shortfall(conn))
    out["shortfall_accounts"] = _part(lambda: shortfall_accounts(conn))
    out["scheduler"] = _part(lambda: scheduler_runs(conn))
    out["webhooks"] = _part(lambda: webhook_figures(conn, broker))
    return out


def snapshot_without_database(
    broker: redis.Redis, cache: redis.Redis, settings: Settings, exc: Exception, *, other_broker: Any = None
) -> dict[str, Any]:
    """The figures when no PostgreSQL connection could be had: its parts say so, Redis' still answer."""
    failed = {"error": type(exc).__name__}
    out: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat()}
    out["listener"] = out["data_latency"] = failed
    out["cache"] = _part(lambda: cache_figures(cache, settings))
    out["sync"] = out["persisted_watermark"] = out["shortfall"] = out["shortfall_accounts"] = failed
    out["scheduler"] = out["webhooks"] = failed
    out["queues"] = _part(lambda: queue_figures(broker, settings, other_broker))
    return out


OK, WARNING, ERROR, NOT_JUDGED = "ok", "warning", "error", "not judged"
# The listener states in which it cannot read the chain (listener/streamer.py).
_NOT_READING = {
    LISTENER_NODE_UNREACHABLE: "cannot reach its node",
    LISTENER_RATE_LIMITED: "is rate-limited",
    LISTENER_FAILING: "is failing",
}


def health_rules(
    snap: dict[str, Any], *, latency_limit_ms: int = 300_000, min_hit_rate: float = 0.8, min_reads: int = 200
) -> list[dict[str, Any]]:
    """Each rule of the data health check with its result and every figure it used.

    The hit-rate rule judges only a window with at least `min_reads` cache lookups: a quiet API
    misses on entries that expired between its few reads, which says nothing of the cache.
    """
    rules: list[dict[str, Any]] = []
    for part in ("listener", "data_latency", "cache"):
        if "error" in snap[part]:
            error = snap[part]["error"]
            rules.append(_rule(part, ERROR, f"{part}: cannot tell ({error})", {"error": error}))
    listener, latency, cache = snap["listener"], snap["data_latency"], snap["cache"]
    if "error" not in listener:
        keys = ("status", "state", "state_detail", "beat_age_s", "head_block", "processed_block", "node_behind_by")
        figures = {k: listener.get(k) for k in keys}
        if listener["status"] == ONLINE and listener.get("state") == LISTENER_NODE_BEHIND:
            # Not a delay that passes by itself: nothing is read until the node passes the checkpoint.
            rules.append(
                _rule("listener", ERROR, f"node behind the checkpoint by {listener['node_behind_by']} blocks", figures)
            )
        elif listener["status"] != ONLINE:
            rules.append(_rule("listener", WARNING, f"listener is {listener['status']}", figures))
        elif listener.get("state") in _NOT_READING:
            what = _NOT_READING[listener["state"]]
            rules.append(_rule("listener", WARNING, f"listener {what}: {listener.get('state_detail')}", figures))
        else:
            rules.append(_rule("listener", OK, None, figures))
    if "error" not in latency:
        figures = {"ms": latency["ms"], "limit_ms": latency_limit_ms, "unknown": latency.get("unknown")}
        if latency["ms"] is None:
            why = latency.get("unknown") or "no chain head or processed block reported yet"
            rules.append(_rule("data_latency", WARNING, f"data latency unknown ({why})", figures))
        elif latency["ms"] >= latency_limit_ms:
            rules.append(
                _rule("data_latency", WARNING, f"data latency {latency['ms']} ms >= {latency_limit_ms} ms", figures)
            )
        else:
            rules.append(_rule("data_latency", OK, None, figures))
    if "error" not in cache:
        reads = cache["hits"] + cache["local_hits"] + cache["misses"]
        figures = {
            "hit_rate": cache["hit_rate"],
            "min_hit_rate": min_hit_rate,
            "reads": reads,
            "min_reads": min_reads,
            "hits": cache["hits"],
            "local_hits": cache["local_hits"],
            "misses": cache["misses"],
            "window_s": cache["window_s"],
        }
        if reads < min_reads or cache["hit_rate"] is None:
            rules.append(_rule("cache_hit_rate", NOT_JUDGED, f"not judged ({reads} reads)", figures))
        elif cache["hit_rate"] <= min_hit_rate:
            reason = f"cache hit rate {cache['hit_rate']} <= {min_hit_rate} over {reads} reads"
            rules.append(_rule("cache_hit_rate", WARNING, reason, figures))
        else:
            rules.append(_rule("cache_hit_rate", OK, None, figures))
    return rules


def health(
    snap: dict[str, Any], latency_limit_ms: int = 300_000, min_hit_rate: float = 0.8, min_reads: int = 200
) -> tuple[str, list[str]]:
    """`healthy`, `warning` or `error` (cannot tell, or the node is behind the checkpoint), with
    the reasons for anything but healthy (health_rules gives each rule's figures)."""
    rules = health_rules(snap, latency_limit_ms=latency_limit_ms, min_hit_rate=min_hit_rate, min_reads=min_reads)
    return verdict(rules)


def verdict(rules: list[dict[str, Any]]) -> tuple[str, list[str]]:
    errors = [r["reason"] for r in rules if r["result"] == ERROR]
    if errors:
        return "error", errors
    warnings = [r["reason"] for r in rules if r["result"] == WARNING]
    return ("warning" if warnings else "healthy"), warnings


def _rule(name: str, result: str, reason: str | None, figures: dict[str, Any]) -> dict[str, Any]:
    return {"rule": name, "result": result, "reason": reason, "figures": figures}


def _part(compute: Callable[[], Any]) -> Any:
    try:
        return compute()
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    except (psycopg.Error, redis.RedisError, OSError) as exc:
        # Only the type: a message may name hosts or hold data.
        log.warning("monitor: %s: %s", type(exc).__name__, str(exc).strip()[:200])
        return {"error": type(exc).__name__}


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", (table, column)
    ).fetchone()
    return row is not None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
