"""Scheduled job runs, every message accounted (sql/010_reconciliation.sql, sql/016_job_accounting.sql).

- `claim_run`: one row per job per time window in `job_runs`, and one `job_run_items` row per
  message (a pool account, or '' for a job of one message), in one transaction, committed before
  anything is sent. Only the claim that inserts the run's row goes on: two schedulers that both
  believe they are active (a lease is no guarantee: a paused holder does not know it lost it)
  still start each job once per window. The commit comes first because a worker reports on these
  rows: a message sent inside the claiming transaction and finished before its commit updated a
  row no other session could see yet, and its count was lost without a trace.
- Workers take an item before its work (`take_item`: a re-sent copy of a message being worked on,
  or already done, is skipped) and close it (`finish_item`), defer it (`defer_item`: it waits and
  is sent again, until its deferrals run out and it closes with the reason), or note a failed
  attempt (`fail_item`). A message whose item does not exist is worked on without being counted,
  and said so in the log.
- `due_items` / `mark_sent` are the one sender: a run's first messages and every re-send. The
  scheduler's repair pass (`extend_current_runs`, then the due items) sends again what is open
  past REPAIR_GRACE_SECONDS and not being worked on, with the listener's accounting policy
  (ledger/store/accounting.py): while the background queue holds a backlog only what waited
  BACKLOG_PATIENCE grace periods, and each repeat waits twice as long. After MAX_SENDS sends an
  item closes with its last error as the reason; the next run of the same job closes what its
  predecessor left open ("superseded").
- A run is finished when each of its items is closed; `last_runs` is the scheduler's last runs
  as a status page shows them, with the accounts not done and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ledger.coordination.backoff import backoff
from ledger.store.accounting import BACKLOG_PATIENCE, MAX_BACKOFF_DOUBLINGS, RESEND_LIMIT

SINGLE = ""  # the item of a job that is one message (lifecycle)
MAX_SENDS = 5  # sends of one item before it closes as not done
# A job may run this long (workers/actors.py's time limit).
JOB_TIME_LIMIT_SECONDS = 600
# While its job runs, a taken item is marked taken again every KEEP_TAKEN_SECONDS by its worker
# process (workers/taken.py). One not marked for TAKEN_SECONDS (plus a grace period) lost its worker
# (killed, or its process stopped): the next copy may take it and the repair pass sends it again.
# Without the marks only the job time limit (10 minutes) could tell.
KEEP_TAKEN_SECONDS = 10.0
TAKEN_SECONDS = 3 * KEEP_TAKEN_SECONDS
MAX_DEFERRALS = 6  # state: retries within the run while the ledger is behind the chain's solid block
DEFER_SECONDS = 5.0  # the first deferral's wait; each next one waits twice as long, up to the cap
DEFER_CAP_SECONDS = 60.0
_NOT_DONE_SHOWN = 20  # accounts named per run in last_runs


def window_start(now: float, seconds: int) -> datetime:
    """The start of the window of `seconds` that `now` (epoch seconds) falls in, aligned on the
    epoch, so every scheduler computes the same windows whenever it started."""
    return datetime.fromtimestamp(now // seconds * seconds, UTC)


def claim_run(
    conn: psycopg.Connection,
    job: str,
    window: datetime,
    accounts: Sequence[str] | None,
    *,
    holder: str,
    lease: str,
    term: int,
) -> int | None:
    """Claim `job`'s `window` for the current `term` of `lease`, with one item per account (None:
    one item, SINGLE), and commit; the caller then sends the due items. Returns the run id, or
    None if the window was already claimed or the term is no longer the lease's current one."""
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
        _add_items(conn, run_id, [SINGLE] if accounts is None else list(accounts), new_run=True)
        # The new run covers what an earlier run of the job left open: those close, superseded.
        closed = conn.execute(
            "UPDATE job_run_items i SET done_at = now(), started_at = NULL, reason = %(why)s"
            " FROM job_runs r WHERE r.id = i.run_id AND r.job = %(job)s AND r.id < %(run)s AND i.done_at IS NULL"
            " RETURNING i.run_id",
            {"job": job, "run": run_id, "why": f"superseded by run {run_id}"},
        ).fetchall()
        for (old,) in closed:
            _count_closed(conn, int(old), {"superseded": 1})
    return run_id


def _add_items(conn: psycopg.Connection, run_id: int, accounts: list[str], *, new_run: bool = False) -> int:
    """Items for `accounts` the run does not list yet (due now); returns how many were added."""
    added = conn.execute(
        "INSERT INTO job_run_items (run_id, account) SELECT %s, a FROM unnest(%s::text[]) a ON CONFLICT DO NOTHING",
        (run_id, accounts),
    ).rowcount
    if added or new_run:
        _count_items(conn, run_id)
    return added


def _count_items(conn: psycopg.Connection, run_id: int) -> None:
    conn.execute(
        "UPDATE job_runs SET messages = (SELECT count(*) FROM job_run_items WHERE run_id = %(r)s),"
        " finished_at = CASE WHEN done >= (SELECT count(*) FROM job_run_items WHERE run_id = %(r)s)"
        " THEN coalesce(finished_at, now()) END WHERE id = %(r)s",
        {"r": run_id},
    )


def extend_current_runs(conn: psycopg.Connection, jobs: dict[str, int], accounts: Sequence[str]) -> dict[int, int]:
    """Add the pool accounts registered since a per-account run of `jobs` (name -> window seconds)
    was claimed, while its window lasts: a run at start covers the accounts registered at start,
    not only those there when its window opened. Returns {run id: accounts added}."""
    added: dict[int, int] = {}
    with conn.transaction():
        for job, seconds in jobs.items():
            row = conn.execute(
                "SELECT id FROM job_runs WHERE job = %s AND window_start + make_interval(secs => %s) > now()"
                " ORDER BY window_start DESC LIMIT 1 FOR UPDATE",
                (job, seconds),
            ).fetchone()
            if row is None:
                continue
            count = _add_items(conn, int(row[0]), list(accounts))
            if count:
                added[int(row[0])] = count
    return added


@dataclass(frozen=True)
class DueItem:
    run_id: int
    job: str
    account: str  # SINGLE for a job of one message
    sends: int


def due_items(
    conn: psycopg.Connection, *, grace_seconds: float, backlog: int, run_id: int | None = None
) -> tuple[list[DueItem], list[DueItem]]:
    """(to send, closed as not done): the open items due and not being worked on. A first send is
    always due; a re-send waits, while the background queue holds `backlog` messages, until it is
    BACKLOG_PATIENCE grace periods late (it may be among them). Items sent MAX_SENDS times close."""
    params = {
        "run": run_id,
        "lease": TAKEN_SECONDS + grace_seconds,
        "backlog": backlog,
        "patience": grace_seconds * BACKLOG_PATIENCE,
        "limit": RESEND_LIMIT,
        "grace": grace_seconds,
    }
    with conn.transaction():
        # Taken for sending by pushing them a grace period out: a pass running beside this one (the
        # repair pass beside a tick) does not send them too. `mark_sent` then sets the real due time.
        rows = conn.execute(
            "UPDATE job_run_items u SET due_at = now() + make_interval(secs => %(grace)s)"
            " FROM (SELECT i.run_id, r.job, i.account, i.sends, i.due_at FROM job_run_items i"
            "  JOIN job_runs r ON r.id = i.run_id"
            "  WHERE i.done_at IS NULL AND i.due_at <= now() AND (%(run)s::bigint IS NULL OR i.run_id = %(run)s)"
            "  AND (i.started_at IS NULL OR i.started_at < now() - make_interval(secs => %(lease)s))"
            "  AND (i.sends = 0 OR %(backlog)s = 0 OR i.due_at <= now() - make_interval(secs => %(patience)s))"
            "  ORDER BY i.due_at LIMIT %(limit)s FOR UPDATE OF i SKIP LOCKED) d"
            " WHERE u.run_id = d.run_id AND u.account = d.account"
            " RETURNING d.run_id, d.job, d.account, d.sends, d.due_at",
            params,
        ).fetchall()
        rows.sort(key=lambda r: (r[4], r[0], r[2]))
        items = [DueItem(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]
        spent = [i for i in items if i.sends >= MAX_SENDS]
        for item in spent:
            _close(
                conn,
                item.run_id,
                item.account,
                {"not_done": 1},
                reason=f"not done after {MAX_SENDS} sends",
                with_last_error=True,
            )
    return [i for i in items if i.sends < MAX_SENDS], spent


def mark_sent(conn: psycopg.Connection, items: Sequence[DueItem], grace_seconds: float) -> None:
    """After sending `items`: the next send is due a grace period later, twice as long each time."""
    cap = grace_seconds * 2**MAX_BACKOFF_DOUBLINGS
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE job_run_items SET sends = sends + 1, sent_at = now(), due_at = now() + make_interval(secs => %s)"
            " WHERE run_id = %s AND account = %s",
            [(backoff(i.sends + 1, base=grace_seconds, cap=cap), i.run_id, i.account) for i in items],
        )


def release(conn: psycopg.Connection, items: Sequence[DueItem]) -> None:
    """Items taken for sending and not sent (the term ended, the broker failed): due again at once."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE job_run_items SET due_at = now() WHERE run_id = %s AND account = %s",
            [(i.run_id, i.account) for i in items],
        )


# -- the worker's side -------------------------------------------------------------------------------


TAKEN, DONE, BUSY, UNLISTED = "taken", "done", "busy", "unlisted"


def take_item(conn: psycopg.Connection, run_id: int, account: str, grace_seconds: float) -> str:
    """Take the item before working on it: TAKEN, or DONE (closed already: this message is a
    re-sent copy), BUSY (another worker has it: marked taken within TAKEN_SECONDS), UNLISTED (no such
    item: the work is done, uncounted)."""
    row = conn.execute(
        "UPDATE job_run_items SET started_at = now(), attempts = attempts + 1"
        " WHERE run_id = %s AND account = %s AND done_at IS NULL"
        " AND (started_at IS NULL OR started_at < now() - make_interval(secs => %s)) RETURNING 1",
        (run_id, account, TAKEN_SECONDS + grace_seconds),
    ).fetchone()
    if row is not None:
        return TAKEN
    row = conn.execute(
        "SELECT done_at IS NOT NULL FROM job_run_items WHERE run_id = %s AND account = %s", (run_id, account)
    ).fetchone()
    if row is None:
        return UNLISTED
    return DONE if row[0] else BUSY


def keep_taken(conn: psycopg.Connection, items: Sequence[tuple[int, str]]) -> int:
    """Mark open items (run id, account) still being worked on (see TAKEN_SECONDS); how many."""
    if not items:
        return 0
    return conn.execute(
        "UPDATE job_run_items i SET started_at = now() FROM unnest(%s::bigint[], %s::text[]) AS t(run_id, account)"
        " WHERE i.run_id = t.run_id AND i.account = t.account AND i.done_at IS NULL",
        ([r for r, _ in items], [a for _, a in items]),
    ).rowcount


def finish_item(
    conn: psycopg.Connection, run_id: int, account: str, result: dict[str, Any], reason: str | None = None
) -> bool:
    """Close the item with its work's `result` (summed into the run's), or with `reason` when it
    ended without it. False when it was closed already (a copy finished first): counted once."""
    with conn.transaction():
        return _close(conn, run_id, account, result, reason=reason)


def defer_item(conn: psycopg.Connection, run_id: int, account: str, reason: str, result: dict[str, Any]) -> bool:
    """The item's work has to wait (`reason`): it is sent again after DEFER_SECONDS, twice as long
    each time, until MAX_DEFERRALS, when it closes with the reason. True when it closed."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE job_run_items SET deferrals = deferrals + 1, reason = %s, started_at = NULL"
            " WHERE run_id = %s AND account = %s AND done_at IS NULL RETURNING deferrals",
            (reason, run_id, account),
        ).fetchone()
        if row is None:
            return False
        if int(row[0]) >= MAX_DEFERRALS:
            return _close(conn, run_id, account, result, reason=f"{reason} (after {MAX_DEFERRALS} tries)")
        _due_in(conn, run_id, account, backoff(int(row[0]), base=DEFER_SECONDS, cap=DEFER_CAP_SECONDS))
        return False


def fail_item(conn: psycopg.Connection, run_id: int, account: str, error: str, grace_seconds: float) -> None:
    """A failed attempt: Dramatiq retries the message; should that copy be lost too (dead-lettered,
    or gone with the broker), the repair pass sends the item again once due."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE job_run_items SET started_at = NULL, last_error = %s"
            " WHERE run_id = %s AND account = %s AND done_at IS NULL RETURNING attempts",
            (error[:500], run_id, account),
        ).fetchone()
        if row is not None:
            cap = grace_seconds * 2**MAX_BACKOFF_DOUBLINGS
            _due_in(conn, run_id, account, backoff(int(row[0]), base=grace_seconds, cap=cap))
        _sum_result(conn, run_id, {"attempt_errors": 1})


def _due_in(conn: psycopg.Connection, run_id: int, account: str, seconds: float) -> None:
    conn.execute(
        "UPDATE job_run_items SET due_at = now() + make_interval(secs => %s) WHERE run_id = %s AND account = %s",
        (seconds, run_id, account),
    )


def _close(
    conn: psycopg.Connection,
    run_id: int,
    account: str,
    result: dict[str, Any],
    *,
    reason: str | None,
    with_last_error: bool = False,
) -> bool:
    # `with_last_error`: the last error or wait, if any, says what kept the item from being done.
    reason_sql = "%(why)s || coalesce(': ' || coalesce(last_error, reason), '')" if with_last_error else "%(why)s"
    row = conn.execute(
        f"UPDATE job_run_items SET done_at = now(), started_at = NULL, result = %(res)s, reason = {reason_sql}"
        " WHERE run_id = %(run)s AND account = %(a)s AND done_at IS NULL RETURNING 1",
        {"res": Jsonb(result), "why": reason, "run": run_id, "a": account},
    ).fetchone()
    if row is None:
        return False
    _count_closed(conn, run_id, result)
    return True


def _count_closed(conn: psycopg.Connection, run_id: int, add: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE job_runs SET done = done + 1,"
        " finished_at = CASE WHEN done + 1 >= messages THEN coalesce(finished_at, now()) END WHERE id = %s",
        (run_id,),
    )
    _sum_result(conn, run_id, add)


def _sum_result(conn: psycopg.Connection, run_id: int, add: dict[str, Any]) -> None:
    """Add `add`'s numbers to the run's `result` (summed: {"recovered": 2} from two accounts makes 4)."""
    conn.execute(
        "UPDATE job_runs SET result = (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM ("
        "   SELECT key, sum(value::numeric) AS value FROM ("
        "     SELECT key, value FROM jsonb_each_text(result)"
        "     UNION ALL SELECT key, value FROM jsonb_each_text(%s)) parts GROUP BY key) summed)"
        " WHERE id = %s",
        (Jsonb(add), run_id),
    )


# -- reading -----------------------------------------------------------------------------------------


def last_runs(conn: psycopg.Connection, per_job: int = 5) -> list[dict[str, Any]]:
    """The latest `per_job` runs of every job, newest first (for a status page), each with the
    accounts not done (open, or closed with a reason) and why, at most _NOT_DONE_SHOWN of them."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, job, window_start, scheduled_at, holder, messages, done, finished_at, result FROM ("
            "  SELECT *, row_number() OVER (PARTITION BY job ORDER BY window_start DESC) AS n FROM job_runs) r"
            " WHERE n <= %s ORDER BY job, window_start DESC",
            (per_job,),
        ).fetchall()
        ids = [row["id"] for row in rows]
        pending = cur.execute(
            "SELECT run_id, account, done_at IS NULL AS open, sends,"
            " coalesce(reason, last_error) AS reason FROM ("
            "  SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY account) AS n FROM job_run_items"
            "  WHERE run_id = ANY(%s) AND (done_at IS NULL OR reason IS NOT NULL)) i"
            " WHERE n <= %s ORDER BY run_id, account",
            (ids, _NOT_DONE_SHOWN),
        ).fetchall()
    by_run: dict[int, list[dict[str, Any]]] = {}
    for item in pending:
        run = by_run.setdefault(item.pop("run_id"), [])
        run.append(item)
    for row in rows:
        row["not_done"] = by_run.get(row.pop("id"), [])
    return list(rows)
