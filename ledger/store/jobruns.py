"""Scheduled job runs: one row per job per time window in `job_runs` (sql/010_reconciliation.sql).

The scheduler claims a window here before it enqueues anything, and only the claim that inserts
the row enqueues: two schedulers that both believe they are active (a lease is no guarantee: a
paused holder does not know it lost it) still start each job once per window. Workers count their
messages on the same row; `last_runs` is what a status page shows as the scheduler's last runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def window_start(now: float, seconds: int) -> datetime:
    """The start of the window of `seconds` that `now` (epoch seconds) falls in, aligned on the
    epoch, so every scheduler computes the same windows whenever it started."""
    return datetime.fromtimestamp(now // seconds * seconds, UTC)


def claim_and_enqueue(
    conn: psycopg.Connection,
    job: str,
    window: datetime,
    messages: Callable[[int], Sequence[object]],
    enqueue: Callable[[Sequence[object]], None],
    *,
    holder: str,
    lease: str,
    term: int,
) -> int | None:
    """Claim `job`'s `window` for the current `term` of `lease`, and enqueue `messages(run_id)`.

    Returns the run id, or None if the window was already claimed or the term is no longer the
    lease's current one (an old holder is refused). The enqueue happens inside the claiming
    transaction: if it fails, the claim is rolled back and the next tick may claim it again (jobs
    are idempotent, so a commit lost after the enqueue costs a duplicate run, never a missed one).
    """
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO job_runs (job, window_start, holder, term)"
            " SELECT %(job)s, %(window)s, %(holder)s, %(term)s"
            " WHERE (SELECT term FROM listener_terms WHERE name = %(lease)s) = %(term)s"
            " ON CONFLICT (job, window_start) DO NOTHING RETURNING id",
            {"job": job, "window": window, "holder": holder, "term": term, "lease": lease},
        ).fetchone()
        if row is None:
            return None
        run_id = int(row[0])
        batch = messages(run_id)
        conn.execute(
            "UPDATE job_runs SET messages = %s, finished_at = CASE WHEN %s = 0 THEN now() END WHERE id = %s",
            (len(batch), len(batch), run_id),
        )
        enqueue(batch)
    return run_id


def finish_message(conn: psycopg.Connection, run_id: int | None, ok: bool, result: dict[str, Any]) -> None:
    """Count one message of run `run_id` done (`ok`) and add its numbers to the run's `result`
    (summed: `{"recovered": 2}` from two accounts makes 4); a failed attempt only adds
    `attempt_errors`, since its retry may still succeed. The run is finished when every message
    is done; one that was dead-lettered leaves it unfinished, which is what a status page should show."""
    if run_id is None:
        return
    add = result if ok else {"attempt_errors": 1}
    conn.execute(
        "UPDATE job_runs SET done = done + %(ok)s,"
        " result = (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM ("
        "   SELECT key, sum(value::numeric) AS value FROM ("
        "     SELECT key, value FROM jsonb_each_text(result)"
        "     UNION ALL SELECT key, value FROM jsonb_each_text(%(add)s)) parts GROUP BY key) summed),"
        " finished_at = CASE WHEN done + %(ok)s >= messages THEN coalesce(finished_at, now()) END"
        " WHERE id = %(id)s",
        {"ok": int(ok), "add": Jsonb(add), "id": run_id},
    )


def last_runs(conn: psycopg.Connection, per_job: int = 5) -> list[dict[str, Any]]:
    """The latest `per_job` runs of every job, newest first (for a status page)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT job, window_start, scheduled_at, holder, messages, done, finished_at, result FROM ("
            "  SELECT *, row_number() OVER (PARTITION BY job ORDER BY window_start DESC) AS n FROM job_runs) r"
            " WHERE n <= %s ORDER BY job, window_start DESC",
            (per_job,),
        ).fetchall()
    return list(rows)
