"""Every scheduled job message accounted: a run lists its accounts, each is closed done or with a
stated reason, and what stays open is sent again. Real scheduler code, real worker processes, real
PostgreSQL and Redis; the simulator as the node."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.brokers.redis import RedisBroker

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, Simulator, settings_env, start_chain, start_worker, wait_until
from ledger.chain.address import to_base58
from ledger.config import Settings
from ledger.coordination.lease import Lease, Term, held
from ledger.coordination.queue import background_queue
from ledger.store.accounts import add_accounts
from ledger.store.jobruns import (
    BUSY,
    DONE,
    JOB_TIME_LIMIT_SECONDS,
    MAX_DEFERRALS,
    MAX_SENDS,
    TAKEN,
    TAKEN_SECONDS,
    UNLISTED,
    claim_run,
    defer_item,
    due_items,
    fail_item,
    finish_item,
    keep_taken,
    last_runs,
    mark_sent,
    take_item,
)
from scheduler.main import LEASE_NAME, JobSpec, Ticker, job_specs
from web.app import close_app, create_app
from workers.taken import TakenItems


def address(n: int) -> str:
    return to_base58("41" + f"{n:040x}")


class SlowBroker(RedisBroker):
    """A broker that takes `pause` seconds per enqueue: a loaded Redis, or the round trips of a run
    of 1,000 accounts, while workers already take the first messages."""

    pause = 0.3

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        time.sleep(self.pause)
        return super().enqueue(message, delay=delay)


@pytest.fixture
def jsettings(settings: Settings, clean_db: str, redis_clean: object, procs: list[Proc]) -> Iterator[Settings]:
    sim = start_chain(procs, settings, "--paused", "true", "--history-blocks", "20")
    yield dataclasses.replace(
        settings,
        queue_name=f"jobs-{uuid.uuid4().hex[:8]}",
        tron_node_url=sim.url,
        repair_grace_seconds=1.0,
        schedule_gap_seconds=3600,
        schedule_state_seconds=3600,
        schedule_lifecycle_seconds=0,
    )


@pytest.fixture
def term(jsettings: Settings) -> Iterator[Term]:
    """This test holds the scheduler's lease, renewed, as the active scheduler does."""
    with held(Lease(jsettings.database_url, LEASE_NAME, "test")) as current:
        assert current is not None
        yield current


def spec(settings: Settings, name: str) -> JobSpec:
    return next(s for s in job_specs(settings) if s.name == name)


def run_row(url: str, job: str) -> tuple[int, int, bool, dict[str, Any]] | None:
    """(messages, done, finished, result) of the job's last run."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT messages, done, finished_at IS NOT NULL, result FROM job_runs WHERE job = %s"
            " ORDER BY id DESC LIMIT 1",
            (job,),
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), bool(row[2]), dict(row[3]))


@pytest.fixture
def ticker_for(jsettings: Settings, term: Term, procs: list[Proc]) -> Iterator[Callable[[type[RedisBroker]], Ticker]]:
    """A worker process on the test's queue, and the active scheduler's ticker over a broker of the
    given kind (its queue flushed at the end)."""
    procs.append(start_worker({**settings_env(jsettings), "dramatiq_worker_timeout": "100"}, threads=4))
    brokers: list[RedisBroker] = []

    def make(kind: type[RedisBroker]) -> Ticker:
        brokers.append(kind(url=jsettings.redis_url))
        return Ticker(jsettings, brokers[-1], term, "test")

    yield make
    for broker in brokers:
        broker.flush(background_queue(jsettings.queue_name))
        broker.close()


def finished_run(url: str, job: str, *, repair: Ticker | None = None, timeout: float = 60) -> tuple[int, int]:
    """(messages, done) of the job's last run once finished; `repair`: the scheduler's repair pass
    runs meanwhile, as it does every few seconds."""

    def finished() -> bool:
        if repair is not None:
            repair.repair()
        row = run_row(url, job)
        return row is not None and row[2]

    wait_until(finished, timeout, f"the {job} run to finish")
    row = run_row(url, job)
    assert row is not None
    return row[0], row[1]


def add(url: str, accounts: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        add_accounts(conn, accounts)


@pytest.mark.slow
def test_a_run_whose_first_messages_finish_while_the_rest_is_sent_counts_every_one(
    jsettings: Settings, ticker_for: Callable[[type[RedisBroker]], Ticker]
) -> None:
    """The 996-of-1,000 gap runs: the messages were sent inside the transaction that inserted the
    run's row, and a worker that finished one before that commit updated a row it could not see:
    done, acked, never counted, and no trace anywhere. With sends this slow the first messages
    always finish first; every one of them must be counted."""
    accounts = [*SIM_ACCOUNTS, *(address(n) for n in range(1, 10))]
    add(jsettings.database_url, accounts)
    assert ticker_for(SlowBroker).tick(spec(jsettings, "gap")) is not None
    assert finished_run(jsettings.database_url, "gap") == (len(accounts), len(accounts))


class LosingBroker(RedisBroker):
    """A broker that loses the first message of each of `lost` accounts (a broker restart without
    AOF, a network cut after the send): no trace anywhere, as the vanished messages left."""

    lost: set[str] = set()

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        if message.args and message.args[0] in self.lost:
            self.lost.discard(str(message.args[0]))
            return message
        return super().enqueue(message, delay=delay)


def sends(url: str, job: str) -> dict[str, int]:
    """account -> times its message was sent, in the job's last run."""
    with psycopg.connect(url) as conn:
        query = "SELECT account, sends FROM job_run_items WHERE run_id = (SELECT max(id) FROM job_runs WHERE job = %s)"
        return {str(a): int(n) for a, n in conn.execute(query, (job,))}


@pytest.mark.slow
def test_messages_the_broker_lost_are_named_and_sent_again_until_the_run_is_done(
    jsettings: Settings, ticker_for: Callable[[type[RedisBroker]], Ticker], caplog: pytest.LogCaptureFixture
) -> None:
    accounts = [*SIM_ACCOUNTS, *(address(n) for n in range(1, 6))]
    lost = {accounts[1], accounts[4], accounts[6]}
    add(jsettings.database_url, accounts)
    LosingBroker.lost = set(lost)
    ticker = ticker_for(LosingBroker)
    assert ticker.tick(spec(jsettings, "gap")) is not None
    # Given every message that arrived done, and the lost ones open
    wait_until(lambda: (run_row(jsettings.database_url, "gap") or (0, 0))[1] == 5, 30, "the five that arrived")
    assert (run_row(jsettings.database_url, "gap") or ())[:3] == (8, 5, False)
    # When the scheduler's repair pass runs past the grace period, then the run counts all eight
    assert finished_run(jsettings.database_url, "gap", repair=ticker, timeout=30) == (8, 8)
    # and the lost accounts were named and sent again, once
    sent = sends(jsettings.database_url, "gap")
    assert {a for a, n in sent.items() if n == 2} == lost and all(n in (1, 2) for n in sent.values())
    named = [r.getMessage() for r in caplog.records if "sent again" in r.getMessage()]
    assert named and all(a in " ".join(named) for a in lost), named


@pytest.mark.slow
def test_a_run_at_start_covers_the_accounts_registered_after_it_began(
    jsettings: Settings, ticker_for: Callable[[type[RedisBroker]], Ticker]
) -> None:
    """The scheduler's first ticks run before the listener has registered POOL_ACCOUNTS: the
    window's run takes them in as they come, instead of finishing with 0 messages for an hour."""
    ticker = ticker_for(RedisBroker)
    assert ticker.tick(spec(jsettings, "gap")) is not None
    assert run_row(jsettings.database_url, "gap") == (0, 0, True, {})
    add(jsettings.database_url, list(SIM_ACCOUNTS))
    assert finished_run(jsettings.database_url, "gap", repair=ticker, timeout=30) == (3, 3)
    assert ticker.tick(spec(jsettings, "gap")) is None  # still one run for the window


@pytest.mark.slow
def test_a_state_run_retries_deferred_accounts_until_each_is_compared_and_says_when_and_where(
    jsettings: Settings, ticker_for: Callable[[type[RedisBroker]], Ticker]
) -> None:
    """While the ledger is behind the chain's solidified block an account cannot be compared: the
    run sends it again until it is, instead of counting it done as "deferred" for an hour; per
    account the API says why it waits, then when it was compared, at which block, and the result."""
    add(jsettings.database_url, list(SIM_ACCOUNTS))
    app = create_app(jsettings)
    client = app.test_client()

    def per_account() -> dict[str, dict[str, Any]]:
        response = client.get("/api/reconciliation/accounts")
        assert response.status_code == 200 and response.json is not None
        return {row["account"]: row for row in response.json["data"]}

    try:
        assert {r["result"] for r in per_account().values()} == {"never compared"}
        ticker = ticker_for(RedisBroker)
        assert ticker.tick(spec(jsettings, "state")) is not None
        # Given no listener has passed the solidified block: each account waits, with the reason
        wait_until(lambda: all(r["reason"] for r in per_account().values()), 30, "the first attempts")
        assert all("before the solidified block" in str(r["reason"]) for r in per_account().values())
        assert all(r["compared_at"] is None for r in per_account().values())
        assert (run_row(jsettings.database_url, "state") or ())[:3] == (3, 0, False)  # waiting is not done
        # When the listener's checkpoint passes it
        with psycopg.connect(jsettings.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO listener_checkpoint (name, block_num, block_id) VALUES ('main', 1000000000, 'x')")
        # Then the run compared all three within itself, and each account says when and where
        assert finished_run(jsettings.database_url, "state", repair=ticker) == (3, 3)
        assert (run_row(jsettings.database_url, "state") or (0, 0, False, {}))[3]["compared"] == 3
        solid = Simulator(str(jsettings.tron_node_url)).status()["solid"]
        for row in per_account().values():
            assert row["compared_at"] is not None and row["block"] == solid and row["reason"] is None
            assert row["result"] == "agrees" if row["differing"] == 0 else row["result"].startswith("differs in")
        # and the status page's data carries it per account
        monitor = client.get("/api/monitor").json
        assert monitor is not None
        shown = {r["account"]: r["compared"] for r in monitor["data"]["shortfall"]}
        assert all(c is not None and c["block"] == solid for c in shown.values()), shown
    finally:
        close_app(app)


# -- the rules of one run, on PostgreSQL alone -----------------------------------------------------


def test_an_item_is_counted_once_closed_with_a_reason_when_it_cannot_be_done_and_superseded_by_the_next_run(
    db: psycopg.Connection,
) -> None:
    db.execute("INSERT INTO listener_terms (name, term, holder) VALUES ('scheduler', 7, 't')")
    window = datetime(2026, 1, 1, tzinfo=UTC)
    run = claim_run(db, "gap", window, ["A", "B", "C"], holder="t", lease="scheduler", term=7)
    assert run is not None
    assert claim_run(db, "gap", window, ["A"], holder="t", lease="scheduler", term=7) is None  # the window is taken
    due, spent = due_items(db, grace_seconds=30, backlog=0, run_id=run)
    assert [i.account for i in due] == ["A", "B", "C"] and spent == []
    mark_sent(db, due, 30)
    assert due_items(db, grace_seconds=30, backlog=0) == ([], [])  # sent: not due again before the grace period
    # A's message arrives twice (a re-send crossed the first): one is worked on, counted once.
    assert take_item(db, run, "A", 30) == TAKEN
    assert take_item(db, run, "A", 30) == BUSY
    assert finish_item(db, run, "A", {"recovered": 2})
    assert take_item(db, run, "A", 30) == DONE and not finish_item(db, run, "A", {"recovered": 2})
    assert take_item(db, run, "Z", 30) == UNLISTED
    # B failed its attempts: each time it is due again later, then it keeps failing past MAX_SENDS.
    assert take_item(db, run, "B", 30) == TAKEN
    fail_item(db, run, "B", "NodeUnavailable: timed out", 30)
    for _ in range(MAX_SENDS - 1):
        db.execute("UPDATE job_run_items SET due_at = now() - interval '1 hour' WHERE account = 'B'")
        due, _ = due_items(db, grace_seconds=30, backlog=0)
        assert [i.account for i in due] == ["B"]
        mark_sent(db, due, 30)
    db.execute("UPDATE job_run_items SET due_at = now() - interval '1 hour' WHERE account = 'B'")
    due, spent = due_items(db, grace_seconds=30, backlog=0)
    assert due == [] and [i.account for i in spent] == ["B"]
    # The next window's run takes C over; the old run is finished, each item closed, and says why.
    later = claim_run(db, "gap", datetime(2026, 1, 1, 1, tzinfo=UTC), ["A", "C"], holder="t", lease="scheduler", term=7)
    assert later is not None
    row = db.execute("SELECT messages, done, finished_at IS NOT NULL, result FROM job_runs WHERE id = %s", (run,))
    assert row.fetchone() == (3, 3, True, {"recovered": 2, "attempt_errors": 1, "not_done": 1, "superseded": 1})
    reasons: dict[str, str | None] = dict(
        db.execute("SELECT account, reason FROM job_run_items WHERE run_id = %s", (run,)).fetchall()
    )
    assert reasons == {
        "A": None,
        "B": f"not done after {MAX_SENDS} sends: NodeUnavailable: timed out",
        "C": f"superseded by run {later}",
    }
    [latest] = [r for r in last_runs(db, per_job=2) if r["window_start"] == window]
    assert {i["account"]: i["reason"] for i in latest["not_done"]} == {"B": reasons["B"], "C": reasons["C"]}


def test_a_deferred_item_waits_longer_each_time_then_closes_with_its_reason(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO listener_terms (name, term, holder) VALUES ('scheduler', 7, 't')")
    run = claim_run(db, "state", datetime(2026, 1, 1, tzinfo=UTC), ["A"], holder="t", lease="scheduler", term=7)
    assert run is not None
    waits = []
    for _ in range(1, MAX_DEFERRALS):
        assert take_item(db, run, "A", 30) == TAKEN
        assert not defer_item(db, run, "A", "the ledger is behind", {"deferred": 1})
        (wait,) = db.execute("SELECT extract(epoch FROM due_at - now()) FROM job_run_items").fetchone() or (0,)
        waits.append(round(float(wait)))
    assert waits == [min(60, 5 * 2 ** (n - 1)) for n in range(1, MAX_DEFERRALS)]
    assert take_item(db, run, "A", 30) == TAKEN
    assert defer_item(db, run, "A", "the ledger is behind", {"deferred": 1})
    row = db.execute("SELECT done_at IS NOT NULL, reason FROM job_run_items").fetchone()
    assert row == (True, f"the ledger is behind (after {MAX_DEFERRALS} tries)")


def test_an_item_its_worker_stopped_marking_is_taken_again_and_sent_again_long_before_the_time_limit(
    db: psycopg.Connection,
) -> None:
    # Given two items taken by workers, then due for a re-send
    db.execute("INSERT INTO listener_terms (name, term, holder) VALUES ('scheduler', 7, 't')")
    run = claim_run(db, "gap", datetime(2026, 1, 1, tzinfo=UTC), ["A", "B"], holder="t", lease="scheduler", term=7)
    assert run is not None
    grace = 30.0
    assert take_item(db, run, "A", grace) == TAKEN and take_item(db, run, "B", grace) == TAKEN
    db.execute("UPDATE job_run_items SET due_at = now() - interval '1 hour'")

    def age(seconds: float) -> None:
        db.execute("UPDATE job_run_items SET started_at = now() - make_interval(secs => %s)", (seconds,))

    # While they are marked within TAKEN_SECONDS, a copy is skipped and nothing is re-sent
    age(TAKEN_SECONDS + grace - 1)
    assert take_item(db, run, "A", grace) == BUSY
    assert due_items(db, grace_seconds=grace, backlog=0) == ([], [])
    # When A's worker stops marking it (killed) and B's goes on, past TAKEN_SECONDS
    age(TAKEN_SECONDS + grace + 1)
    assert keep_taken(db, [(run, "B")]) == 1
    # Then A alone is sent again and a copy of it takes it; B's job is left to its worker
    (due, spent) = due_items(db, grace_seconds=grace, backlog=0)
    assert ([(i.run_id, i.account) for i in due], spent) == ([(run, "A")], [])
    assert take_item(db, run, "A", grace) == TAKEN and take_item(db, run, "B", grace) == BUSY
    assert TAKEN_SECONDS + grace < JOB_TIME_LIMIT_SECONDS / 5


def test_a_worker_marks_the_items_it_works_on_as_taken_until_it_lets_go(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("INSERT INTO listener_terms (name, term, holder) VALUES ('scheduler', 7, 't')")
        run = claim_run(conn, "gap", datetime(2026, 1, 1, tzinfo=UTC), ["A"], holder="t", lease="scheduler", term=7)
        assert run is not None and take_item(conn, run, "A", 30) == TAKEN

        def age() -> float:
            row = conn.execute("SELECT extract(epoch FROM now() - started_at) FROM job_run_items").fetchone()
            assert row is not None
            return float(row[0])

        conn.execute("UPDATE job_run_items SET started_at = now() - interval '1 hour'")
        taken = TakenItems(clean_db, interval=0.05)
        try:
            # While its job runs, the item is marked taken again and again
            with taken.holding(run, "A"):
                wait_until(lambda: age() < 1, 10, "the item marked taken")
                conn.execute("UPDATE job_run_items SET started_at = now() - interval '1 hour'")
                wait_until(lambda: age() < 1, 10, "the item marked taken again")
            # Once the job ends, it is not marked any more
            conn.execute("UPDATE job_run_items SET started_at = now() - interval '1 hour'")
            assert taken.mark() == 0 and age() >= 3600
        finally:
            taken.close()
