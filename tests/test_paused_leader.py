"""A leader that stops without dying (SIGSTOP: a long GC or swap pause, a VM migration) neither
stalls the ledger nor corrupts it, for the listener and for the scheduler.

- Paused with its PostgreSQL sessions intact: a standby takes over within the lease time.
- Paused, its lease session dropped (a partition, a PostgreSQL failover), the chain forked at its
  checkpoint and moved on, then woken: it sends nothing that changes the ledger, and the messages
  it had sent before, still queued when a standby took over, are dropped and counted.
"""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
import redis

from harness.procs import Proc, python
from harness.stack import (
    SIM_ACCOUNTS,
    drop_lease_session,
    main_checkpoint,
    queued,
    start_chain,
    start_listener,
    start_worker,
    wait_until,
)
from harness.truth import assert_ledger_matches_truth
from ledger.config import Settings
from ledger.coordination.queue import background_queue
from ledger.ops.metrics import METRICS_KEY
from ledger.store.accounts import add_accounts

# Leases shorter than the defaults (6 s, renewed every second), so that each takeover waits
# seconds less: a standby takes over at most LEASE_SECONDS + LEASE_RETRY_SECONDS after the
# holder's last renewal; the limit adds 3 s for a loaded machine.
LEASE = {"LEASE_SECONDS": "3", "LEASE_RENEW_DEADLINE_SECONDS": "2", "LEASE_RETRY_SECONDS": "0.5"}
FAILOVER_LIMIT = 3 + 0.5 + 3.0


def _stale_dropped(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        fields = client.hgetall(METRICS_KEY)
    finally:
        client.close()
    return int(sum(float(v) for k, v in fields.items() if str(k).startswith("ledger_worker_stale_messages_total")))


def _active_and_standby(env: dict[str, str]) -> tuple[Proc, Proc]:
    first = start_listener(env)
    first.wait_for(r"active: term \d+", 30)
    second = start_listener(env)
    second.wait_for(r"standby: waiting for the lease", 30)
    return first, second


@pytest.mark.slow
def test_a_paused_active_listener_is_replaced_within_the_lease_time(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a live chain, a worker, and two listeners: one active, one standby
    sim = start_chain(procs, settings, "--block-interval", "0.5", "--history-blocks", "100", "--ops-per-block", "2")
    env = {**env, **LEASE, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    procs.append(start_worker(env))
    first, second = _active_and_standby(env)
    procs += [first, second]
    wait_until(lambda: main_checkpoint(settings.database_url) >= sim.status()["head"] - 2, 60, "catch-up")
    # When the active one stops without dying, its PostgreSQL sessions intact
    first.kill(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # Then the standby takes over within the lease time and follows the head
        second.wait_for(r"active: term \d+", 2 * FAILOVER_LIMIT)
        failover = time.monotonic() - stopped
        head = sim.status()["head"]
        wait_until(lambda: main_checkpoint(settings.database_url) >= head, 30, "the new active one at the head")
    finally:
        first.kill(signal.SIGCONT)
    assert failover <= FAILOVER_LIMIT, failover
    # And the old one, woken, knows it is no longer active
    first.wait_for(r"standby again after losing term", 15)
    sim.pause()
    head = sim.status()["head"]
    wait_until(lambda: main_checkpoint(settings.database_url) == head, 30, "the head")
    # And nothing was lost or doubled
    assert_ledger_matches_truth(settings, sim, env)
    assert "Traceback" not in second.output()


@pytest.mark.slow
def test_a_deposed_listener_waking_after_a_fork_corrupts_nothing(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a paused chain, a worker, two listeners (one active) and the ledger equal to the chain
    sim = start_chain(
        procs, settings, "--block-interval", "0.5", "--history-blocks", "60", "--ops-per-block", "3", "--paused"
    )
    env = {**env, **LEASE, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    worker = start_worker(env)
    procs.append(worker)
    old, new = _active_and_standby(env)
    procs += [old, new]
    head = sim.status()["head"]
    wait_until(lambda: main_checkpoint(settings.database_url) == head, 60, "catch-up")
    assert_ledger_matches_truth(settings, sim, env)
    # ... and messages of the active one's term still queued (the worker is stalled) when it stops
    worker.kill(signal.SIGSTOP)
    try:
        sim.produce(5)
        wait_until(lambda: main_checkpoint(settings.database_url) == head + 5, 30, "the new blocks")
        # When it stops without dying and its lease session is dropped
        old.kill(signal.SIGSTOP)
        try:
            assert drop_lease_session(settings.database_url, old.popen.pid, "main") == 1
            stopped = time.monotonic()
            new.wait_for(r"active: term \d+", 2 * FAILOVER_LIMIT)
            failover = time.monotonic() - stopped
            # ... the chain forks at its checkpoint (3 blocks replaced) and moves on 40 blocks
            sim.http.post("/sim/fork", json={"depth": 3}).raise_for_status()
            sim.produce(40)
            top = sim.status()["head"]
            wait_until(lambda: main_checkpoint(settings.database_url) == top, 60, "the new active one at the head")
            new.wait_for(r"fork: block", 10)
        finally:
            # ... and then it wakes up
            old.kill(signal.SIGCONT)
        old.wait_for(r"standby again after losing term", 15)
        time.sleep(2)  # whatever it would still do after waking
    finally:
        worker.kill(signal.SIGCONT)
    assert failover <= FAILOVER_LIMIT, failover
    # Then the ledger equals the chain: nothing orphaned that the chain holds, nothing lost or doubled
    assert_ledger_matches_truth(settings, sim, env, timeout=90)
    with psycopg.connect(settings.database_url) as conn:
        canonical_orphaned = conn.execute(
            "SELECT count(*) FROM orphaned_blocks o JOIN recent_blocks r ON r.block_id = o.block_id"
        ).fetchone()
    assert canonical_orphaned == (0,)
    # And the old term's messages that were still queued were dropped, and counted
    wait_until(lambda: _stale_dropped(settings) > 0, 10, "stale messages counted")


# -- the scheduler ----------------------------------------------------------------------------------


def _scheduler(env: dict[str, str], name: str) -> Proc:
    proc = Proc(name, python("-m", "scheduler"), env)
    proc.wait_for(r"scheduler started", timeout=30)
    return proc


def _windows(url: str) -> list[tuple[float, str]]:
    """(window start, holder) of each lifecycle run, in order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM window_start), holder FROM job_runs"
            " WHERE job = 'lifecycle' ORDER BY window_start"
        ).fetchall()
    return [(float(w), str(h)) for w, h in rows]


def _two_schedulers(env: dict[str, str], procs: list[Proc]) -> tuple[Proc, Proc, dict[str, str]]:
    env = {
        **env,
        **LEASE,
        "SCHEDULE_LIFECYCLE_SECONDS": "2",
        "SCHEDULE_GAP_SECONDS": "0",
        "SCHEDULE_STATE_SECONDS": "0",
        "SCHEDULE_TOTALS_SECONDS": "0",
        "TRON_NODE_URL": "http://127.0.0.1:9",  # never called: the scheduler only enqueues
    }
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        add_accounts(conn, list(SIM_ACCOUNTS))
    first = _scheduler(env, "scheduler-1")
    procs.append(first)
    first.wait_for(r"active: term", 30)
    second = _scheduler(env, "scheduler-2")
    procs.append(second)
    wait_until(lambda: len(_windows(env["DATABASE_URL"])) >= 2, 30, "two lifecycle windows")
    return first, second, env


@pytest.mark.slow
@pytest.mark.parametrize("drop_session", [False, True], ids=["session-intact", "session-dropped"])
def test_a_paused_scheduler_is_replaced_and_the_woken_one_runs_no_window_twice(
    env: dict[str, str], procs: list[Proc], drop_session: bool
) -> None:
    active, standby, env = _two_schedulers(env, procs)
    # When the active one stops without dying (its lease session dropped too, or not)
    active.kill(signal.SIGSTOP)
    stopped, stopped_at = time.monotonic(), time.time()
    try:
        if drop_session:
            assert drop_lease_session(env["DATABASE_URL"], active.popen.pid, "scheduler") == 1
        # Then the standby takes over within the lease time and runs the windows that follow
        standby.wait_for(r"active: term", 2 * FAILOVER_LIMIT)
        failover = time.monotonic() - stopped
        before = len(_windows(env["DATABASE_URL"]))
        wait_until(lambda: len(_windows(env["DATABASE_URL"])) >= before + 2, 30, "two more windows")
    finally:
        active.kill(signal.SIGCONT)
    assert failover <= FAILOVER_LIMIT, failover
    # And the old one, woken, runs nothing: each window once, nothing enqueued twice
    active.wait_for(r"standby again after losing term", 15)
    time.sleep(3)  # a tick it would still run
    windows = _windows(env["DATABASE_URL"])
    starts = [w for w, _ in windows]
    assert len(starts) == len(set(starts))
    assert queued({**env, "QUEUE_NAME": background_queue(env["QUEUE_NAME"])}) == len(windows)
    assert any(w >= stopped_at and h.endswith(f":{standby.popen.pid}") for w, h in windows), windows
