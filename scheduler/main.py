"""`python -m scheduler`: enqueue the reconciliation jobs on their schedules (it does no work itself).

Several may run: one is active, holding the lease "scheduler" (the same expiring PostgreSQL lease as
the listener's, ledger/coordination/lease.py), the others are standbys that take over once it
expires (LEASE_SECONDS after the active one's last renewal; at once when it stops cleanly). While
active it runs an APScheduler BackgroundScheduler with one interval job per enabled schedule
(`SCHEDULE_*_SECONDS`):

- coalesce=True and max_instances=1: a slow tick (PostgreSQL or the broker stalling) does not pile
  up runs behind it;
- misfire_grace_time = half the interval: a tick more than that late is dropped, the next one is
  on time;
- a tick checks first that the term may still act (a scheduler woken from a pause does nothing),
  then claims its window in `job_runs` for its term with one item per message
  (ledger/store/jobruns.py), commits, and only the claim that wins sends, so each job starts once
  per window even if two schedulers both think they are active;
- a repair pass every few seconds (min(5, REPAIR_GRACE_SECONDS / 2)) adds the pool accounts
  registered since the current runs were claimed, and sends again what is open past its grace
  period, naming the accounts in the log (the accounting of ledger/store/jobruns.py). Every send
  checks the term first.

On taking the lease every job ticks at once: a window the previous holder already ran is refused
by `job_runs`, one it missed runs now.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ledger.config import Settings, load_settings
from ledger.coordination.lease import (
    Leader,
    Lease,
    LeaseTiming,
    Term,
    TermEnded,
    default_holder,
    holder_session_options,
)
from ledger.coordination.queue import (
    LIFECYCLE,
    NETWORK_TOTALS,
    RECONCILE_GAPS,
    RECONCILE_STATE,
    background_queue,
    create_broker,
    job_message,
    lane_actor_name,
    queued_messages,
)
from ledger.ops.logs import setup_logging
from ledger.store.accounts import tracked_addresses
from ledger.store.jobruns import (
    SINGLE,
    DueItem,
    claim_run,
    due_items,
    extend_current_runs,
    mark_sent,
    release,
    window_start,
)

log = logging.getLogger("scheduler")

LEASE_NAME = "scheduler"


@dataclass(frozen=True)
class JobSpec:
    name: str  # the job_runs.job value and the APScheduler job id
    actor: str
    per_account: bool  # one message per pool account, else one message
    seconds: int


def job_specs(settings: Settings) -> list[JobSpec]:
    specs = [
        JobSpec("gap", RECONCILE_GAPS, True, settings.schedule_gap_seconds),
        JobSpec("state", RECONCILE_STATE, True, settings.schedule_state_seconds),
        JobSpec("lifecycle", LIFECYCLE, False, settings.schedule_lifecycle_seconds),
        JobSpec("totals", NETWORK_TOTALS, False, settings.schedule_totals_seconds),
    ]
    return [spec for spec in specs if spec.seconds > 0]


class Ticker:
    """What one active term does: claim each job's window, and send the runs' due messages (the
    first sends and the repair pass's re-sends, one sender)."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, term: Term, holder: str) -> None:
        self.settings = settings
        self.broker = broker
        self.term = term
        self.holder = holder
        self.specs = {spec.name: spec for spec in job_specs(settings)}
        # Background lane: reconciliation must never hold up the live records (ledger/coordination/queue.py).
        self.queue = background_queue(settings.queue_name)

    def _connect(self) -> psycopg.Connection:
        # A claim's transaction holds its window's job_runs key until it ends: paused inside it,
        # this process must not keep the next holder from claiming that window.
        options = holder_session_options(LeaseTiming.of(self.settings))
        return psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5, options=options)

    def tick(self, spec: JobSpec, now: float | None = None) -> int | None:
        window = window_start(time.time() if now is None else now, spec.seconds)
        try:
            # A tick that fires as the process wakes from a pause longer than the renew deadline
            # does nothing: another scheduler may hold the lease by now.
            self.term.ensure()
            with self._connect() as conn:
                accounts = sorted(tracked_addresses(conn)) if spec.per_account else None
                run_id = claim_run(
                    conn, spec.name, window, accounts, holder=self.holder, lease=LEASE_NAME, term=self.term.number
                )
                if run_id is None:
                    log.debug("%s: window %s already ran", spec.name, window.isoformat())
                    return None
                sent = self._send_due(conn, run_id=run_id)
        except TermEnded as exc:
            log.info("%s: window %s left to the next holder: %s", spec.name, window.isoformat(), exc)
            return None
        except Exception as exc:  # noqa: BLE001 - PostgreSQL or the broker down: the repair pass sends what is due
            log.warning("%s: could not start the run of window %s: %s", spec.name, window.isoformat(), exc)
            return None
        log.info("%s: run %d sent %d message(s) (window %s)", spec.name, run_id, sent, window.isoformat())
        return run_id

    def repair(self) -> int:
        """Add newly registered accounts to the current runs, send again what is due; returns the
        messages sent."""
        try:
            self.term.ensure()
            with self._connect() as conn:
                per_account = {s.name: s.seconds for s in self.specs.values() if s.per_account}
                added = extend_current_runs(conn, per_account, sorted(tracked_addresses(conn)))
                for run_id, count in added.items():
                    log.info("run %d: %d pool account(s) registered since its start added", run_id, count)
                return self._send_due(conn)
        except TermEnded:
            return 0
        except Exception as exc:  # noqa: BLE001 - PostgreSQL or the broker down: the next pass retries
            log.warning("job repair pass failed: %s", exc)
            return 0

    def _send_due(self, conn: psycopg.Connection, run_id: int | None = None) -> int:
        backlog = queued_messages(self.broker, self.queue)
        grace = self.settings.repair_grace_seconds
        due, spent = due_items(conn, grace_seconds=grace, backlog=backlog, run_id=run_id)
        for item in spent:
            log.warning("%s run %d: %s closed not done after its last send", item.job, item.run_id, item.account or "-")
        due = [item for item in due if item.job in self.specs]
        sent: list[DueItem] = []
        try:
            for item in due:
                self.term.ensure()  # a holder past its deadline sends nothing more
                self.broker.enqueue(self._message(item))
                sent.append(item)
        finally:
            # Pushed back only once sent: a crash in between sends again, which a job survives.
            mark_sent(conn, sent, grace)
            release(conn, due[len(sent) :])
        again = [item for item in sent if item.sends > 0]
        for (job, run), items in _by_run(again).items():
            log.warning(
                "%s run %d: %d account(s) not done %.0fs after their send, sent again: %s",
                job,
                run,
                len(items),
                grace,
                ", ".join(item.account or "-" for item in items[:20]) + (" …" if len(items) > 20 else ""),
            )
        return len(sent)

    def _message(self, item: DueItem) -> dramatiq.Message[Any]:
        actor = lane_actor_name(self.specs[item.job].actor, self.queue)
        args: tuple[Any, ...] = (item.run_id,) if item.account == SINGLE else (item.account, item.run_id)
        return job_message(actor, args, self.queue)


def _by_run(items: list[DueItem]) -> dict[tuple[str, int], list[DueItem]]:
    out: dict[tuple[str, int], list[DueItem]] = {}
    for item in items:
        out.setdefault((item.job, item.run_id), []).append(item)
    return out


def run_active(settings: Settings, term: Term, holder: str) -> None:
    broker = create_broker(settings.effective_broker_url)
    ticker = Ticker(settings, broker, term, holder)
    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    for spec in job_specs(settings):
        scheduler.add_job(
            ticker.tick,
            IntervalTrigger(seconds=spec.seconds, timezone=UTC),
            args=[spec],
            id=spec.name,
            name=f"{spec.name} every {spec.seconds}s",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, spec.seconds // 2),
            next_run_time=now,  # at once: job_runs refuses a window the previous holder ran
        )
    scheduler.add_job(
        ticker.repair,
        IntervalTrigger(seconds=min(5.0, settings.repair_grace_seconds / 2), timezone=UTC),
        id="repair",
        name="job repair",
        coalesce=True,
        max_instances=1,
    )
    scheduler.start()
    try:
        term.stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler",
        description=(
            "Enqueue the reconciliation jobs (gap, state, lifecycle) on the schedules in SCHEDULE_*_SECONDS. "
            "Several may run: one is active (PostgreSQL lease), each job starts once per window (job_runs)."
        ),
    )
    parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, secrets=(settings.tron_api_key,))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per tick is ours
    holder = default_holder()
    leader = Leader(Lease(settings.database_url, LEASE_NAME, holder, LeaseTiming.of(settings)), stop=threading.Event())

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signum)
        leader.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    specs = ", ".join(f"{s.name} every {s.seconds}s" for s in job_specs(settings)) or "none"
    log.info("scheduler started: %s, queue %s", specs, settings.queue_name)
    try:
        leader.run(lambda term: run_active(settings, term, holder))
    finally:
        leader.lease.disconnect()
    log.info("scheduler stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
