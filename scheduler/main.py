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
  then claims its window in `job_runs` (ledger/store/jobruns.py) for its term, and only the claim
  that wins enqueues, so each job starts once per window even if two schedulers both think they
  are active.

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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ledger.config import Settings, load_settings
from ledger.coordination.lease import Leader, Lease, LeaseTiming, Term, TermEnded, default_holder
from ledger.coordination.queue import (
    LIFECYCLE,
    NETWORK_TOTALS,
    RECONCILE_GAPS,
    RECONCILE_STATE,
    background_queue,
    create_broker,
    job_message,
    lane_actor_name,
)
from ledger.ops.logs import setup_logging
from ledger.store.accounts import tracked_addresses
from ledger.store.jobruns import claim_and_enqueue, window_start

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
    """What one active term does on each tick: claim the window, enqueue the job's messages."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, term: Term, holder: str) -> None:
        self.settings = settings
        self.broker = broker
        self.term = term
        self.holder = holder

    def tick(self, spec: JobSpec, now: float | None = None) -> int | None:
        window = window_start(time.time() if now is None else now, spec.seconds)
        try:
            # A tick that fires as the process wakes from a pause longer than the renew deadline
            # does nothing: another scheduler may hold the lease by now.
            self.term.ensure()
            with psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5) as conn:
                # Background lane: reconciliation must never hold up the live records (ledger/coordination/queue.py).
                queue = background_queue(self.settings.queue_name)
                actor = lane_actor_name(spec.actor, queue)

                def messages(run_id: int) -> Sequence[object]:
                    if not spec.per_account:
                        return [job_message(actor, (run_id,), queue)]
                    accounts = sorted(tracked_addresses(conn))
                    return [job_message(actor, (a, run_id), queue) for a in accounts]

                def enqueue(batch: Sequence[Any]) -> None:
                    for message in batch:
                        self.term.ensure()  # raising rolls the claim back
                        self.broker.enqueue(message)

                run_id = claim_and_enqueue(
                    conn,
                    spec.name,
                    window,
                    messages,
                    enqueue,
                    holder=self.holder,
                    lease=LEASE_NAME,
                    term=self.term.number,
                )
        except TermEnded as exc:
            log.info("%s: window %s left to the next holder: %s", spec.name, window.isoformat(), exc)
            return None
        except Exception as exc:  # noqa: BLE001 - PostgreSQL or the broker down: the next tick retries
            log.warning("%s: could not start the run of window %s: %s", spec.name, window.isoformat(), exc)
            return None
        if run_id is None:
            log.debug("%s: window %s already ran", spec.name, window.isoformat())
        else:
            log.info("%s: run %d enqueued (window %s)", spec.name, run_id, window.isoformat())
        return run_id


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
