"""The scheduler: one active among several (the shared lease), each job once per window (job_runs),
a killed active one replaced by a standby."""

from __future__ import annotations

import re
import signal
import threading
import time

import psycopg
import pytest
import redis

from harness.procs import Proc, python
from harness.stack import SIM_ACCOUNTS, wait_until
from ledger.config import Settings
from ledger.coordination.lease import Lease
from ledger.coordination.queue import background_queue
from ledger.store.accounts import add_accounts
from ledger.store.jobruns import claim_run, window_start


def _runs(url: str, job: str) -> list[tuple[float, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM window_start), messages FROM job_runs WHERE job = %s ORDER BY window_start",
            (job,),
        ).fetchall()
    return [(float(w), int(m)) for w, m in rows]


def test_a_window_is_claimed_once_whoever_asks_and_an_old_term_is_refused(clean_db: str) -> None:
    lease = Lease(clean_db, "scheduler", "test")
    held = lease.acquire()
    assert held is not None
    term = held.number
    window = window_start(time.time(), 60)
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        with psycopg.connect(clean_db, autocommit=True) as conn:
            barrier.wait()
            results.append(claim_run(conn, "gap", window, list(SIM_ACCOUNTS), holder="t", lease="scheduler", term=term))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    won = [r for r in results if r is not None]
    assert len(won) == 1
    with psycopg.connect(clean_db) as conn:
        listed = conn.execute("SELECT run_id, count(*) FROM job_run_items GROUP BY run_id").fetchall()
    assert listed == [(won[0], len(SIM_ACCOUNTS))]  # one run, its accounts listed once
    # A holder whose term was superseded cannot claim the next window.
    lease.release(held)
    assert lease.acquire() is not None
    with psycopg.connect(clean_db, autocommit=True) as conn:
        later = window_start(time.time() + 60, 60)
        assert claim_run(conn, "gap", later, ["x"], holder="t", lease="scheduler", term=term) is None
    lease.disconnect()


def _scheduler(env: dict[str, str], name: str) -> Proc:
    proc = Proc(name, python("-m", "scheduler"), env)
    proc.wait_for(r"scheduler started", timeout=30)
    return proc


def _queue_length(settings: Settings, queue: str) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.hlen(f"dramatiq:{queue}.msgs"))
    finally:
        client.close()


@pytest.fixture
def scheduler_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "SCHEDULE_LIFECYCLE_SECONDS": "2",
        "SCHEDULE_GAP_SECONDS": "3",  # one message per pool account per window
        "SCHEDULE_STATE_SECONDS": "0",
        "SCHEDULE_TOTALS_SECONDS": "0",
        "TRON_NODE_URL": "http://127.0.0.1:9",  # never called: the scheduler only enqueues
        # Short, so what a killed scheduler left unsent goes out within the test; its re-sends of
        # queued messages wait 10 grace periods behind the backlog, longer than the test.
        "REPAIR_GRACE_SECONDS": "4",
        # A short lease, so the takeover after a kill fits this test's windows.
        "LEASE_SECONDS": "2",
        "LEASE_RENEW_DEADLINE_SECONDS": "1.5",
        "LEASE_RETRY_SECONDS": "0.5",
    }


@pytest.mark.slow
def test_two_schedulers_run_each_job_once_per_window_and_a_standby_takes_over(
    settings: Settings, scheduler_env: dict[str, str], procs: list[Proc]
) -> None:
    url = scheduler_env["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        add_accounts(conn, list(SIM_ACCOUNTS))
    first = _scheduler(scheduler_env, "scheduler-1")
    procs.append(first)
    second = _scheduler(scheduler_env, "scheduler-2")
    procs.append(second)
    wait_until(lambda: len(_runs(url, "lifecycle")) >= 4, 60, "four lifecycle windows")
    active, standby = (first, second) if "active: term" in first.output() else (second, first)
    assert "active: term" not in standby.output()

    # When the active one is killed (no chance to release anything)
    active.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    standby.wait_for(r"active: term", timeout=30)
    took_over = time.monotonic() - killed_at
    before = len(_runs(url, "lifecycle"))
    wait_until(lambda: len(_runs(url, "lifecycle")) >= before + 3, 60, "three more lifecycle windows")

    # Then the standby took the lease once it expired (within the 2-s lease plus its 0.5-s retry,
    # and the start of the process's first tick), and each window ran exactly once.
    assert took_over < 5, took_over
    for job, seconds, per_run in (("lifecycle", 2, 1), ("gap", 3, 3)):
        runs = _runs(url, job)
        windows = [w for w, _ in runs]
        assert len(windows) == len(set(windows))
        assert all(messages == per_run for _, messages in runs), runs
        assert all(int(w) % seconds == 0 for w in windows)

    # Nothing was enqueued twice, nothing left unsent: the broker holds exactly the messages the runs
    # account for (one a killed scheduler claimed and had not sent yet goes out with the next
    # holder's repair pass, after REPAIR_GRACE_SECONDS).
    def sent_once() -> bool:
        total = sum(m for job in ("lifecycle", "gap") for _, m in _runs(url, job))
        return _queue_length(settings, background_queue(scheduler_env["QUEUE_NAME"])) == total

    wait_until(sent_once, 15, "every claimed message sent, once")
    # The windows follow each other with at most the takeover's gap.
    lifecycle = [w for w, _ in _runs(url, "lifecycle")]
    gaps = [b - a for a, b in zip(lifecycle, lifecycle[1:], strict=False)]
    assert max(gaps) <= 2 * (1 + int(took_over) + 1), gaps
    assert re.search(r"lifecycle: run \d+ sent", standby.output())


@pytest.mark.slow
def test_at_a_first_start_the_runs_take_in_the_pool_accounts_registered_after_them(
    settings: Settings, scheduler_env: dict[str, str], procs: list[Proc]
) -> None:
    """The scheduler ticks every job as it takes the lease, before the listener has registered
    POOL_ACCOUNTS: the window's gap and state runs take those accounts in and send their messages,
    instead of finishing with 0 messages until the next window (an hour for the state job)."""
    env = {
        **scheduler_env,
        "SCHEDULE_GAP_SECONDS": "3600",
        "SCHEDULE_STATE_SECONDS": "3600",
        "REPAIR_GRACE_SECONDS": "2",
    }
    url = env["DATABASE_URL"]
    scheduler = _scheduler(env, "scheduler")
    procs.append(scheduler)
    scheduler.wait_for(r"state: run \d+ sent 0 message", timeout=30)
    assert [m for _, m in _runs(url, "gap")] == [0]
    with psycopg.connect(url, autocommit=True) as conn:
        add_accounts(conn, list(SIM_ACCOUNTS))  # what the listener does at its start
    wait_until(lambda: [m for _, m in _runs(url, "gap") + _runs(url, "state")] == [3, 3], 20, "both runs to cover them")
    scheduler.wait_for(r"3 pool account\(s\) registered since its start added", timeout=10)
    # Sent, each once: 3 gap and 3 state messages wait for a worker (besides the lifecycle runs').
    queue = background_queue(env["QUEUE_NAME"])
    wait_until(lambda: _queue_length(settings, queue) >= 6, 10, "the six messages")
    with psycopg.connect(url) as conn:
        sends = conn.execute(
            "SELECT sends FROM job_run_items i JOIN job_runs r ON r.id = i.run_id WHERE r.job <> 'lifecycle'"
        )
        assert [n for (n,) in sends] == [1] * 6
