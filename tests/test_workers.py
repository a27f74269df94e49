"""The worker as it runs in production: real `dramatiq workers.main:setup` processes, real Redis
and PostgreSQL. Each test gets its own queue name, so workers of other tests never see its messages.
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import dramatiq
import psycopg
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from psycopg.conninfo import make_conninfo

from harness.procs import Proc, python
from harness.servers import PrivateRedis
from harness.stack import delete_rabbitmq_queues, settings_env
from harness.tcpproxy import TcpProxy
from ledger.chain.address import to_base58
from ledger.config import Settings
from ledger.coordination.budget import BudgetExhausted, BudgetLimits, Priority, create_budget
from ledger.coordination.queue import (
    LIFECYCLE,
    OPERATIONS_PER_MESSAGE,
    PERSIST_OPERATION,
    RECONCILE_GAPS,
    RECONCILE_STATE,
    BrokerSink,
    background_queue,
    confirm_message,
    create_broker,
    job_message,
    lane_actor_name,
    operation_message,
    operations_messages,
    revert_message,
)
from ledger.domain import Operation
from ledger.positions import Position
from ledger.store.accounts import add_accounts
from ledger.store.cache import create_cache_client
from ledger.store.db import create_pool
from ledger.store.deadletters import broker_dead_letter_count, list_dead_letters, requeue_dead_letter
from ledger.store.jobruns import claim_run
from tests.conftest import TEST_RABBITMQ_URL
from tests.test_persist import ALICE, BOB, CAROL, DAVE, make_op
from workers import actors
from workers.actors import Deps
from workers.dbgate import DbGate
from workers.invalidator import Invalidator

T = TypeVar("T")


@pytest.fixture
def wsettings(settings: Settings, clean_db: str, request: pytest.FixtureRequest) -> Settings:
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    return dataclasses.replace(settings, queue_name=f"t_{name}_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def producer(wsettings: Settings) -> Iterator[dramatiq.Broker]:
    """The listener's side: a broker that only enqueues by actor name."""
    broker = create_broker(wsettings.redis_url)
    yield broker
    broker.flush(wsettings.queue_name)  # this test's queue, delay queue and dead letters
    broker.close()


@pytest.fixture
def start_worker(wsettings: Settings) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(threads: int = 4, **env: str) -> Proc:
        proc = Proc(
            "worker",
            python("-m", "dramatiq", "workers.main:setup", "--processes", "1", "--threads", str(threads)),
            {**settings_env(wsettings), "dramatiq_worker_timeout": "100", **env},  # quick idle polls
        )
        procs.append(proc)
        proc.wait_for(r"worker ready", timeout=20)
        return proc

    yield start
    for proc in procs:
        proc.kill()  # SIGKILL: a graceful stop takes seconds, and this queue is thrown away


@pytest.fixture
def pg(wsettings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(wsettings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def budget_jobs(wsettings: Settings, producer: RedisBroker) -> Iterator[str]:
    """The background queue for job messages, on an empty shared request budget: the budget's keys
    (budget:tron:*) and the queue are cleared before and after the test."""
    keys = redis.Redis.from_url(wsettings.budget_redis_url)
    bg_queue = background_queue(wsettings.queue_name)

    def clear() -> None:
        keys.delete(*keys.keys("budget:tron:*") or ["-"])
        producer.flush(bg_queue)

    clear()
    yield bg_queue
    clear()
    keys.close()


def wait_until(check: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)


def drained(broker: RedisBroker, queue: str) -> bool:
    """True when every message sent is acked or dead-lettered (retries sit in the delay queue)."""
    pending = broker.client.hlen(f"dramatiq:{queue}.msgs") + broker.client.hlen(f"dramatiq:{queue}.DQ.msgs")
    return pending == 0


def send(broker: RedisBroker, settings: Settings, *ops: Operation) -> None:
    for op in ops:
        broker.enqueue(operation_message(op, settings.queue_name))


def wait_drained(broker: RedisBroker, settings: Settings, timeout: float = 20.0) -> None:
    wait_until(lambda: drained(broker, settings.queue_name), timeout, f"queue {settings.queue_name} to drain")


def rows(pg: psycopg.Connection, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return pg.execute(query, params).fetchall()


# --- tests ---------------------------------------------------------------------------------------


def test_same_message_twice_gives_one_row_and_invalidates(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    cache = redis.Redis.from_url(wsettings.cache_redis_url)
    cache.delete(f"ledger:ver:{ALICE}", f"ledger:ver:{BOB}")
    start_worker()
    freeze, delegate = make_op("freeze", 100), make_op("delegate", 101)
    message = operation_message(freeze, wsettings.queue_name)
    producer.enqueue(message)
    producer.enqueue(message)  # a redelivery: the same message id
    send(producer, wsettings, freeze, delegate, delegate)  # a re-enqueue: new message ids
    wait_drained(producer, wsettings)
    assert rows(pg, "SELECT count(*) FROM stake_records") == [(1,)]
    assert rows(pg, "SELECT count(*) FROM delegate_records") == [(1,)]
    # Each persist bumped the generation of the accounts it touched (seeded with a ms timestamp).
    assert int(cache.get(f"ledger:ver:{ALICE}") or 0) > 1_600_000_000_000
    assert int(cache.get(f"ledger:ver:{BOB}") or 0) > 1_600_000_000_000


@pytest.mark.slow
def test_out_of_order_messages_reach_the_same_state(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    start_worker()
    # The confirmation comes first, then the withdraw, then the lot it settles (ALICE) ...
    producer.enqueue(confirm_message(150, wsettings.queue_name))
    wait_until(lambda: rows(pg, "SELECT solid_block FROM chain_state") == [(150,)], what="solid block")
    send(producer, wsettings, make_op("withdraw_expire_unfreeze", 112))
    wait_drained(producer, wsettings)
    send(producer, wsettings, make_op("unfreeze", 100))
    # ... and in chain order for CAROL: lot, withdraw, confirmation.
    send(producer, wsettings, make_op("unfreeze", 100, tx_index=1, owner_address=CAROL))
    wait_drained(producer, wsettings)
    send(producer, wsettings, make_op("withdraw_expire_unfreeze", 112, tx_index=1, owner_address=CAROL))
    producer.enqueue(confirm_message(150, wsettings.queue_name))
    wait_drained(producer, wsettings)
    state = rows(
        pg,
        "SELECT u.owner_address, u.status, u.confirmed, s.status, w.status FROM unfreeze_records u"
        " JOIN stake_records s USING (tx_id, op_index) JOIN stake_records w ON w.tx_id = u.settled_tx_id"
        " ORDER BY u.owner_address",
    )
    assert state == [
        (ALICE, "withdrawn", True, "confirmed", "confirmed"),
        (CAROL, "withdrawn", True, "confirmed", "confirmed"),
    ]


def lots_and_withdraws(seed: int, with_freezes: bool = False) -> list[Operation]:
    """For each of 40 owners an unfreeze lot and the withdraw that settles it (and a freeze of their
    own `with_freezes`), shuffled by `seed` so that they race."""
    ops = []
    for i in range(40):
        owner = to_base58("41" + f"{i + 1:040x}")
        ops.append(make_op("unfreeze", 100, tx_index=i, owner_address=owner))
        ops.append(make_op("withdraw_expire_unfreeze", 111 + i % 3, tx_index=i, owner_address=owner))
        if with_freezes:
            ops.append(make_op("freeze", 101, tx_index=i, owner_address=owner))
    random.Random(seed).shuffle(ops)
    return ops


def assert_all_settled(pg: psycopg.Connection, confirmed_stake_rows: int) -> None:
    """Every lot of `lots_and_withdraws` withdrawn and confirmed, every stake row confirmed, no dead letter."""
    assert rows(pg, "SELECT status, confirmed, count(*) FROM unfreeze_records GROUP BY 1, 2") == [
        ("withdrawn", True, 40)
    ]
    assert rows(pg, "SELECT status, count(*) FROM stake_records GROUP BY status") == [
        ("confirmed", confirmed_stake_rows)
    ]
    assert rows(pg, "SELECT count(*) FROM dead_letters") == [(0,)]


@pytest.mark.slow
def test_concurrent_lots_and_withdraws_all_settle(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    # Two processes x 4 threads race each lot against the withdraw that settles it ...
    start_worker(threads=4)
    start_worker(threads=4)
    ops = lots_and_withdraws(seed=7)
    messages = [operation_message(op, wsettings.queue_name) for op in ops]
    # ... and confirmations race the inserts: none may leave a row pending below the solid block.
    for i in range(10, len(messages), 10):
        messages.insert(i, confirm_message(120, wsettings.queue_name))
    for message in messages:
        producer.enqueue(message)
    wait_drained(producer, wsettings)
    assert_all_settled(pg, confirmed_stake_rows=80)


def test_status_is_monotonic_and_values_exact(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    start_worker()
    big = 2**62 + 1  # beyond 2^53: a float would round it
    confirmed = make_op("freeze", 100, amount=big, status="confirmed")
    failed = make_op("freeze", 101, status="failed", contract_ret="REVERT")
    locked = make_op("delegate", 102, tx_index=0, amount=big, lock=True, lock_period=28_800, receiver_address=DAVE)
    unlocked = make_op("delegate", 102, tx_index=1, amount=big + 2, receiver_address=DAVE)
    send(producer, wsettings, confirmed, failed, locked, unlocked)
    wait_drained(producer, wsettings)
    send(producer, wsettings, confirmed.with_status("pending"), failed.with_status("pending"))
    send(producer, wsettings, failed.with_status("confirmed"), locked.with_status("failed"))
    wait_drained(producer, wsettings)
    assert rows(pg, "SELECT block_num, amount, status FROM stake_records ORDER BY block_num") == [
        (100, big, "confirmed"),
        (101, 1_000_000, "failed"),
    ]
    assert rows(
        pg,
        "SELECT amount, lock, lock_period, lock_expire_time - block_time, status FROM delegate_records"
        " WHERE owner_address = %s AND receiver_address = %s ORDER BY tx_index",
        ALICE,
        DAVE,
    ) == [
        (big, True, 28_800, timedelta(seconds=86_400), "failed"),  # pending -> failed is forward
        (big + 2, False, 0, None, "pending"),
    ]


def test_poison_message_is_dead_lettered_at_once(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    worker = start_worker(threads=1)  # one thread: the good messages really are queued behind it
    queue = wsettings.queue_name
    poison: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=PERSIST_OPERATION, args=({"tx_id": "not hex"},), kwargs={}, options={}
    )
    producer.enqueue(poison)
    producer.enqueue(confirm_message("soon", queue))  # type: ignore[arg-type]
    send(producer, wsettings, make_op("freeze", 100), make_op("freeze", 101))
    wait_drained(producer, wsettings)

    assert rows(pg, "SELECT count(*) FROM stake_records") == [(2,)]
    letters = list_dead_letters(pg)
    assert [(d["actor_name"], d["error_type"], d["retries"]) for d in letters] == [
        ("confirm_blocks", "ledger.domain.PayloadError", 0),
        ("persist_operation", "ledger.domain.PayloadError", 0),
    ]
    assert letters[1]["message_id"] == poison.message_id and letters[1]["args"] == [{"tx_id": "not hex"}]
    assert broker_dead_letter_count(producer.client, queue) == 2
    assert "Retrying message" not in worker.output()

    # Requeue: enqueued again (and, still poison, dead-lettered again), the old row and XQ copy gone.
    assert requeue_dead_letter(pg, producer, letters[1]["id"]) == poison.message_id
    wait_until(lambda: len(list_dead_letters(pg)) == 2 and list_dead_letters(pg)[0]["id"] > letters[0]["id"])
    wait_drained(producer, wsettings)
    assert broker_dead_letter_count(producer.client, queue) == 2
    assert requeue_dead_letter(pg, producer, 10**9) is None


@pytest.mark.slow
def test_database_outage_pauses_workers_without_spending_retries(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        # One retry only: a message that spent one on the outage would show "Retrying message"
        worker = start_worker(
            threads=2,
            DATABASE_URL=make_conninfo(wsettings.database_url, host="127.0.0.1", port=str(proxy.port)),
            RETRY_MAX_RETRIES="1",
        )
        send(producer, wsettings, make_op("freeze", 100))
        wait_drained(producer, wsettings)
        assert rows(pg, "SELECT count(*) FROM stake_records") == [(1,)]

        proxy.close()  # PostgreSQL "goes away": open connections dropped, new ones refused
        send(producer, wsettings, *(make_op("freeze", 101 + i) for i in range(6)), make_op("delegate", 110))
        worker.wait_for(r"PostgreSQL unavailable .* workers pause", timeout=20)
        time.sleep(3)  # an outage longer than the pool's wait and reconnect timeouts
        assert rows(pg, "SELECT count(*) FROM stake_records WHERE block_num > 100") == [(0,)]
        proxy.open()
        returned = time.monotonic()

        # Persisting again within 5 s of PostgreSQL's return (about 0.5 s when idle)
        wait_until(lambda: rows(pg, "SELECT count(*) FROM stake_records") == [(7,)], 5, "the workers to resume")
        resumed = time.monotonic() - returned
        wait_drained(producer, wsettings, timeout=10)
    print(f"persisting again {resumed:.2f} s after PostgreSQL returned")
    assert rows(pg, "SELECT count(*) FROM delegate_records") == [(1,)]
    assert rows(pg, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert broker_dead_letter_count(producer.client, wsettings.queue_name) == 0
    assert "Retrying message" not in worker.output()
    assert "answering again" in worker.output()


def test_cache_outage_costs_one_short_attempt_and_is_made_good(
    wsettings: Settings, pg: psycopg.Connection, private_redis: PrivateRedis
) -> None:
    # The actor body, in process, against a private cache Redis that is then hung (SIGSTOP)
    pool = create_pool(wsettings.database_url, max_size=1, name="test")
    cache = create_cache_client(private_redis.url(), 0.25)
    deps = Deps(
        settings=wsettings,
        pool=pool,
        gate=DbGate(wsettings.database_url, pool),
        invalidator=Invalidator(cache, probe_interval=0.1),
    )
    probe = redis.Redis.from_url(private_redis.url())
    try:
        actors.persist_operation(deps, make_op("freeze", 100).to_message())
        before = int(probe.get(f"ledger:ver:{ALICE}") or 0)
        assert before > 0
        private_redis.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            for i in range(20):
                actors.persist_operation(deps, make_op("freeze", 101 + i).to_message())
            took = time.monotonic() - started
            # One socket timeout in all, not one per message (20 x 0.25 s = 5 s)
            assert took < 2.0, took
            assert deps.invalidator.pending == 1
        finally:
            private_redis.signal(signal.SIGCONT)
        # The skipped invalidation is made once the cache answers
        wait_until(lambda: deps.invalidator.pending == 0, 10, "the skipped bump")
        assert int(probe.get(f"ledger:ver:{ALICE}") or 0) > before
    finally:
        deps.invalidator.close()
        cache.close()
        probe.close()
        pool.close()
    assert rows(pg, "SELECT count(*) FROM stake_records") == [(21,)]


def test_dead_letters_on_rabbitmq(
    wsettings: Settings, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    # The same middleware on the other broker: rows with the final exception; a requeue re-sends
    # (the broker's own .XQ copy cannot be taken out of a RabbitMQ queue and stays until its TTL).
    queue = wsettings.queue_name
    rabbit = create_broker(TEST_RABBITMQ_URL)
    assert isinstance(rabbit, RabbitmqBroker)
    try:
        start_worker(threads=1, BROKER_URL=TEST_RABBITMQ_URL)
        poison: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue, actor_name=PERSIST_OPERATION, args=({"tx_id": "not hex"},), kwargs={}, options={}
        )
        rabbit.enqueue(poison)
        for op in (make_op("freeze", 100), make_op("freeze", 101)):
            rabbit.enqueue(operation_message(op, queue))
        wait_until(lambda: rows(pg, "SELECT count(*) FROM stake_records") == [(2,)], what="the good rows")
        letters = wait_until(lambda: list_dead_letters(pg), what="the dead letter")
        assert [(d["actor_name"], d["error_type"], d["redis_message_id"]) for d in letters] == [
            ("persist_operation", "ledger.domain.PayloadError", None)
        ]
        wait_until(lambda: rabbit.get_queue_message_counts(queue)[2] == 1, what="the broker's dead-letter copy")
        assert requeue_dead_letter(pg, rabbit, letters[0]["id"]) == poison.message_id
        wait_until(lambda: [d["id"] for d in list_dead_letters(pg)] == [letters[0]["id"] + 1], what="a new row")
        wait_until(lambda: rabbit.get_queue_message_counts(queue)[2] == 2, what="the second broker copy")
    finally:
        rabbit.close()
        delete_rabbitmq_queues(TEST_RABBITMQ_URL, queue)


def test_live_record_overtakes_a_pending_backfill(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    """Live first: with a large backfill queued (on the background queue, as `listener backfill`
    sends it), a live operation is persisted while most of the backlog is still waiting. (With the
    backlog on the live queue instead, the live record waits for all of it: this test then fails.)"""
    backlog = 20_000
    bg_queue = background_queue(wsettings.queue_name)
    history = [make_op("freeze", 1_000 + i // 50, tx_index=i % 50) for i in range(backlog)]
    sink = BrokerSink(producer, bg_queue, threads=8)
    try:
        sink.publish(history)
        start_worker(threads=2)
        # The worker is busy with the backlog before the live record arrives.
        wait_until(lambda: rows(pg, "SELECT count(*) FROM stake_records")[0][0] > 0, 60, "the backlog to start")
        live = make_op("freeze", 90_000, owner_address=CAROL)
        producer.enqueue(operation_message(live, wsettings.queue_name))
        wait_until(lambda: rows(pg, "SELECT 1 FROM stake_records WHERE tx_id = %s", live.tx_id), 60, "the live record")
        # (The sink sends the backlog in groups of operations: count operations, not messages.)
        done = rows(pg, "SELECT count(*) FROM stake_records WHERE block_num < 90000")[0][0]
        assert done < backlog // 2, f"the live record waited for the backlog ({done} of {backlog} done first)"
    finally:
        sink.close()
        producer.flush(bg_queue)


def test_background_jobs_leave_threads_free_for_live_messages(
    wsettings: Settings,
    producer: RedisBroker,
    start_worker: Callable[..., Proc],
    pg: psycopg.Connection,
    budget_jobs: str,
) -> None:
    """A reconciliation job holds its thread while it waits on the request budget. With more such
    jobs queued than the worker has threads, a live operation is still persisted at once: the
    background lane gets half the threads. (With every thread in a job, the live message waits for
    the first job to give up, 20 s and more here: this test then fails.)"""
    bg_queue = budget_jobs
    worker = start_worker(
        threads=4,
        TRON_NODE_URL="http://127.0.0.1:9",
        # One token at most, and background callers must leave 0.4 of it: a job's request
        # waits until its 30-s budget wait is used up, holding its thread all along.
        TRON_REQUESTS_PER_SECOND="0.05",
        TRON_REQUESTS_BURST="1",
    )
    worker.wait_for(r"background lane: at most 2 of 4 threads", timeout=10)
    for account in [ALICE, BOB, CAROL, DAVE] * 2:
        producer.enqueue(job_message(lane_actor_name(RECONCILE_STATE, bg_queue), (account, None), bg_queue))
    time.sleep(1.0)  # the jobs are taken and waiting on the budget
    live = make_op("freeze", 500)
    producer.enqueue(operation_message(live, wsettings.queue_name))
    wait_until(lambda: rows(pg, "SELECT 1 FROM stake_records WHERE tx_id = %s", live.tx_id), 5, "the live record")


@pytest.mark.slow
def test_jobs_meeting_a_spent_background_share_are_deferred_not_dead_lettered(
    wsettings: Settings,
    producer: RedisBroker,
    start_worker: Callable[..., Proc],
    pg: psycopg.Connection,
    budget_jobs: str,
) -> None:
    """Once the day's background share of the request budget is spent, a reconciliation job
    cannot get a request until the next UTC day: it is counted done as deferred (the next window
    runs it again), never retried into dead letters. (Without the rule each message is retried
    and dead-lettered: this test then fails.)"""
    limits = BudgetLimits(per_second=100, burst=100, per_day=10, daily_reserve_fraction=0.4)
    budget_env = {
        "TRON_NODE_URL": "http://127.0.0.1:9",  # never asked: the budget refuses first
        "TRON_REQUESTS_PER_SECOND": "100",
        "TRON_REQUESTS_BURST": "100",
        "TRON_REQUESTS_PER_DAY": str(limits.per_day),
        "TRON_BUDGET_DAILY_RESERVE_FRACTION": str(limits.daily_reserve_fraction),
    }
    budget = create_budget(wsettings.budget_redis_url, limits, max_wait=0)
    bg_queue = budget_jobs
    try:
        # Given the background share (6 of the day's 10) spent, the live reserve left
        for _ in range(6):
            budget.acquire(Priority.BACKGROUND)
        with pytest.raises(BudgetExhausted):
            budget.acquire(Priority.BACKGROUND)
        # When a run of the state and gap jobs over three accounts reaches a worker
        accounts = [ALICE, BOB, CAROL]
        runs = {base: job_run(pg, job, accounts) for base, job in ((RECONCILE_STATE, "state"), (RECONCILE_GAPS, "gap"))}
        for base, run_id in runs.items():
            for account in accounts:
                producer.enqueue(job_message(lane_actor_name(base, bg_queue), (account, run_id), bg_queue))
        worker = start_worker(threads=2, **budget_env)

        # Then the runs finish, every message closed with the reason, none retried or dead-lettered
        def finished() -> list[tuple[Any, ...]]:
            done = rows(
                pg, "SELECT result FROM job_runs WHERE id = ANY(%s) AND finished_at IS NOT NULL", list(runs.values())
            )
            return done if len(done) == len(runs) else []

        assert [r[0] for r in wait_until(finished, 30)] == [{"deferred_budget": len(accounts)}] * len(runs)
        reasons = rows(pg, "SELECT DISTINCT split_part(reason, ':', 1) FROM job_run_items")
        assert reasons == [("request budget spent",)]
        assert rows(pg, "SELECT count(*) FROM dead_letters") == [(0,)]
        assert "Retrying message" not in worker.output()
        # and the live class may still spend its reserve
        budget.acquire(Priority.LIVE)
    finally:
        budget.close()


# --- the lifecycle job: what lost confirm_blocks / revert_blocks messages left undone -------------


def job_run(pg: psycopg.Connection, job: str, accounts: list[str] | None) -> int:
    """A run of `job` over `accounts` (None: one message) as the scheduler claims it, committed."""
    (term,) = rows(
        pg,
        "INSERT INTO listener_terms (name, term, holder) VALUES ('scheduler', 1, 't')"
        " ON CONFLICT (name) DO UPDATE SET holder = 't' RETURNING term",
    )[0]
    run_id = claim_run(pg, job, datetime.now(UTC), accounts, holder="t", lease="scheduler", term=int(term))
    assert run_id is not None
    return run_id


def _run_lifecycle_job(pg: psycopg.Connection, producer: RedisBroker, bg_queue: str) -> None:
    """Enqueue a lifecycle run as the scheduler does and wait until the worker finished it."""
    run_id = job_run(pg, "lifecycle", None)
    producer.enqueue(job_message(lane_actor_name(LIFECYCLE, bg_queue), (run_id,), bg_queue))
    wait_until(lambda: rows(pg, "SELECT 1 FROM job_runs WHERE id = %s AND finished_at IS NOT NULL", run_id))


def test_a_lost_confirmation_is_folded_with_the_configured_unfreeze_delay(
    wsettings: Settings,
    producer: RedisBroker,
    start_worker: Callable[..., Proc],
    pg: psycopg.Connection,
    budget_jobs: str,
) -> None:
    """On a chain whose unfreeze delay is not mainnet's 14 days, the folded position made when the
    lifecycle job makes good a lost confirm_blocks holds the lot at the chain's delay."""
    delay = 3 * 86_400
    add_accounts(pg, [ALICE])
    start_worker(UNFREEZE_DELAY_SECONDS=str(delay))
    # Given a pool account's unfreeze stored pending
    unfreeze = make_op("unfreeze", 100)
    send(producer, wsettings, unfreeze)
    wait_until(lambda: rows(pg, "SELECT status FROM stake_records") == [("pending",)])
    # and a solidified head of 150 noted by the listener, whose confirm_blocks was lost long ago
    pg.execute("UPDATE chain_state SET solid_block = 150 WHERE id = 1")
    pg.execute("UPDATE stake_records SET updated_at = now() - interval '1 hour'")
    # When the lifecycle job runs
    _run_lifecycle_job(pg, producer, budget_jobs)
    # Then the record is confirmed and the account folded up to 150 with the lot at 3 days
    folded = wait_until(lambda: rows(pg, "SELECT block_num, state::text FROM positions WHERE address = %s", ALICE))
    assert rows(pg, "SELECT status FROM stake_records") == [("confirmed",)]
    block, state = folded[0]
    assert block == 150
    assert [lot.expire_ms for lot in Position.from_json(state).lots] == [unfreeze.now_ms + delay * 1000]


def test_a_lost_revert_orphans_the_failed_records_of_the_block(
    wsettings: Settings,
    producer: RedisBroker,
    start_worker: Callable[..., Proc],
    pg: psycopg.Connection,
    budget_jobs: str,
) -> None:
    """A failed transaction leaves the chain with its block like any other: when the revert_blocks
    of a block holding only failed records was lost, the lifecycle job makes it good as well."""
    start_worker()
    # Given a failed record of block 100, which then left the chain
    failed = make_op("freeze", 100, status="failed", contract_ret="OUT_OF_ENERGY")
    send(producer, wsettings, failed)
    wait_until(lambda: rows(pg, "SELECT status FROM stake_records") == [("failed",)])
    # The listener noted the block as orphaned (as its rollback does: shown replaced) long ago; its
    # revert_blocks message was lost
    pg.execute(
        "INSERT INTO orphaned_blocks (block_num, block_id, orphaned_at, checked_at)"
        " VALUES (%s, %s, now() - interval '1 hour', now() - interval '1 hour')",
        (100, failed.block_id),
    )
    # When the lifecycle job runs
    _run_lifecycle_job(pg, producer, budget_jobs)
    # Then the failed record is orphaned like the chain's other records of that block would be
    wait_until(lambda: rows(pg, "SELECT status FROM stake_records") == [("orphaned",)], what="the revert")


def test_a_revert_of_a_block_the_listener_records_is_refused(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    """A revert without a term (as a listener of an earlier release sent one, from a deposed term)
    naming a block the canonical chain still has orphans nothing; one for a replaced block does."""
    proc = start_worker()
    kept, gone = make_op("freeze", 100), make_op("freeze", 101)
    send(producer, wsettings, kept, gone)
    wait_until(lambda: rows(pg, "SELECT count(*) FROM stake_records") == [(2,)])
    # The listener records block 100 as it is on the chain, and another block than `gone`'s at 101
    pg.execute(
        "INSERT INTO recent_blocks (block_num, block_id, parent_hash, term)"
        " VALUES (100, %s, 'p', 1), (101, %s, 'p', 1)",
        (kept.block_id, "ff" * 32),
    )
    producer.enqueue(revert_message([(100, kept.block_id), (101, gone.block_id)], wsettings.queue_name))
    wait_until(lambda: rows(pg, "SELECT status FROM stake_records WHERE tx_id = %s", gone.tx_id) == [("orphaned",)])
    assert rows(pg, "SELECT status FROM stake_records WHERE tx_id = %s", kept.tx_id) == [("pending",)]
    assert rows(pg, "SELECT block_id FROM orphaned_blocks") == [(gone.block_id,)]
    proc.wait_for(r"refused to orphan 1 block\(s\) the canonical chain still has", 10)


# --- groups of operations (persist_operations: the listener's messages) ----------------------------


def test_operations_messages_group_by_owner_in_chain_order_and_chunk() -> None:
    # ALICE: 2n + 1 operations (three messages), CAROL: n + 1 (two), for n = OPERATIONS_PER_MESSAGE.
    n = OPERATIONS_PER_MESSAGE
    ops = [make_op("freeze", 100 + i, owner_address=ALICE if i % 3 else CAROL) for i in range(3 * n + 2)]
    messages = operations_messages(ops, "ledger")
    assert [m.actor_name for m in messages] == ["persist_operations"] * 5
    groups = [m.args[0] for m in messages]
    assert sorted(len(g) for g in groups) == [1, 1, n, n, n]
    assert all(len({p["owner_address"] for p in g}) == 1 for g in groups)
    # Nothing lost or doubled, and each owner's operations keep the order they were given in.
    for owner in (ALICE, CAROL):
        sent = [p["tx_id"] for g in groups for p in g if p["owner_address"] == owner]
        assert sent == [op.tx_id for op in ops if op.owner_address == owner]
    background = operations_messages(ops[:1], background_queue("ledger"))
    assert [(m.queue_name, m.actor_name) for m in background] == [
        ("ledger-background", "persist_operations_background")
    ]
    assert operations_messages([], "ledger") == []


def test_a_group_persists_like_its_operations_one_by_one_and_invalidates_each_account(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    cache = redis.Redis.from_url(wsettings.cache_redis_url)
    cache.delete(*(f"ledger:ver:{a}" for a in (ALICE, BOB, CAROL, DAVE)))
    start_worker(threads=4)
    # ALICE: a freeze, a lot and the withdraw that settles it, a delegation to BOB; CAROL: a lot.
    alice = [
        make_op("freeze", 100),
        make_op("unfreeze", 100, tx_index=1),
        make_op("delegate", 101, receiver_address=BOB),
        make_op("withdraw_expire_unfreeze", 112),
    ]
    carol = [make_op("unfreeze", 105, owner_address=CAROL)]
    sink = BrokerSink(producer, wsettings.queue_name)
    try:
        assert sink.publish(alice + carol) == 5
        wait_drained(producer, wsettings)
        # The same operations again in other groupings (a repair's re-send, a redelivery): no change.
        sink.publish(reversed(alice + carol))
        producer.enqueue(operations_messages(alice, wsettings.queue_name)[0])
        wait_drained(producer, wsettings)
    finally:
        sink.close()
    assert rows(pg, "SELECT count(*) FROM stake_records") == [(4,)]
    assert rows(pg, "SELECT count(*) FROM delegate_records") == [(1,)]
    assert rows(pg, "SELECT owner_address, status FROM unfreeze_records ORDER BY owner_address") == sorted(
        [(ALICE, "withdrawn"), (CAROL, "pending")]
    )
    for account in (ALICE, BOB, CAROL):  # the receiver of a delegation too
        assert int(cache.get(f"ledger:ver:{account}") or 0) > 1_600_000_000_000, account
    assert cache.get(f"ledger:ver:{DAVE}") is None
    assert rows(pg, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_a_group_holding_a_poison_operation_is_split_and_only_that_one_dead_lettered(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    start_worker(threads=2)
    good = [make_op("freeze", 100), make_op("freeze", 101)]
    out_of_range = make_op("freeze", 102, tx_index=2**31)  # valid JSON, but no INTEGER column holds it
    bad_payload = {"tx_id": "not hex"}
    for poison in (out_of_range.to_message(), bad_payload):
        group = [good[0].to_message(), poison, good[1].to_message()]
        producer.enqueue(
            dramatiq.Message(
                queue_name=wsettings.queue_name, actor_name="persist_operations", args=(group,), kwargs={}, options={}
            )
        )
    wait_drained(producer, wsettings)
    assert rows(pg, "SELECT block_num FROM stake_records ORDER BY 1") == [(100,), (101,)]
    letters = list_dead_letters(pg)
    assert [(d["actor_name"], d["error_type"]) for d in letters] == [
        ("persist_operation", "ledger.domain.PayloadError")
    ] * 2
    assert sorted(d["args"][0]["tx_id"] for d in letters) == sorted([out_of_range.tx_id, "not hex"])
    assert [d["args"] for d in letters if d["args"][0]["tx_id"] == out_of_range.tx_id] == [[out_of_range.to_message()]]
    # Not a list at all: the group itself is the poison message.
    producer.enqueue(
        dramatiq.Message(
            queue_name=wsettings.queue_name, actor_name="persist_operations", args=("nope",), kwargs={}, options={}
        )
    )
    wait_drained(producer, wsettings)
    assert sorted(d["actor_name"] for d in list_dead_letters(pg)) == [
        "persist_operation",
        "persist_operation",
        "persist_operations",
    ]


def test_concurrent_groups_of_lots_and_withdraws_all_settle(
    wsettings: Settings, producer: RedisBroker, start_worker: Callable[..., Proc], pg: psycopg.Connection
) -> None:
    # As test_concurrent_lots_and_withdraws_all_settle, through the listener's sink: each publish
    # holds a shuffled slice, so one owner's lot and withdraw land in different groups, on two
    # processes at once, with confirmations racing them.
    start_worker(threads=4)
    start_worker(threads=4)
    ops = lots_and_withdraws(seed=11, with_freezes=True)
    sink = BrokerSink(producer, wsettings.queue_name)
    try:
        for i in range(0, len(ops), 10):
            sink.publish(ops[i : i + 10])
            producer.enqueue(confirm_message(120, wsettings.queue_name))
        wait_drained(producer, wsettings)
    finally:
        sink.close()
    assert_all_settled(pg, confirmed_stake_rows=120)
