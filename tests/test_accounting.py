"""End-to-end accounting (ledger/store/accounting.py) on real PostgreSQL: what the checkpoint records, how
the persisted watermark follows the workers' rows, and what a repair pass sends again.

Inside the `db` fixture's transaction now() is fixed, so ages are set by moving timestamps back
instead of sleeping."""

from __future__ import annotations

import dataclasses
import signal
import uuid
from collections.abc import Callable, Iterable, Iterator

import dramatiq
import psycopg
import pytest

from harness.servers import PrivateRedis
from harness.stack import delete_rabbitmq_queues
from ledger.coordination.queue import BrokerLoss, BrokerSink, create_broker
from ledger.domain import Operation
from ledger.store.accounting import BACKLOG_PATIENCE, MAIN_CHECKPOINT, read_heads, record_expected, repair
from listener.store import PgStore, move_checkpoint
from tests.conftest import TEST_RABBITMQ_URL
from tests.test_forks import NEW, OLD
from tests.test_persist import make_op, persist
from tests.test_streamer import ListSink
from workers.persist import revert_blocks

BLOCK_ID = "00" * 32


class FakeSink(ListSink):
    """The streamer tests' sink, with a broker backlog of `backlog` messages."""

    def __init__(self, backlog: int = 0) -> None:
        super().__init__()
        self.queued = backlog

    def backlog(self) -> int:
        return self.queued


class RecordingSink(BrokerSink):
    """The listener's sink on a real broker, remembering what it was given to send."""

    def __init__(self, broker: dramatiq.Broker, queue: str) -> None:
        super().__init__(broker, queue, threads=2)
        self.sent: list[Operation] = []

    def publish(self, operations: Iterable[Operation]) -> int:
        ops = list(operations)
        self.sent.extend(ops)
        return super().publish(ops)


def checkpoint_at(conn: psycopg.Connection, block: int) -> None:
    move_checkpoint(conn, MAIN_CHECKPOINT, 0, block, BLOCK_ID)


def age(conn: psycopg.Connection, seconds: float) -> None:
    """Make every recorded operation `seconds` old."""
    conn.execute(
        "UPDATE expected_operations SET recorded_at = now() - make_interval(secs => %s), due_at = NULL", (seconds,)
    )


def _term(conn: psycopg.Connection, term: int) -> None:
    conn.execute(
        "INSERT INTO listener_terms (name, term, holder, expires_at) VALUES (%s, %s, 't', now() + interval '1 hour')"
        " ON CONFLICT (name) DO UPDATE SET term = EXCLUDED.term",
        (MAIN_CHECKPOINT, term),
    )


@pytest.mark.parametrize("broker_lost_messages", [False, True])
def test_a_new_term_re_sends_at_once_what_earlier_terms_recorded(
    db: psycopg.Connection, broker_lost_messages: bool
) -> None:
    # Given an operation recorded by term 1 a moment ago, then term 2 current with one of its own,
    # and a broker still holding a backlog (both messages among it)
    checkpoint_at(db, 110)
    old, new = make_op("freeze", 101), make_op("freeze", 102)
    _term(db, 1)
    record_expected(db, [old], term=1)
    _term(db, 2)
    record_expected(db, [new], term=2)
    sink = FakeSink(backlog=50)
    if broker_lost_messages:  # the broker restarted, and kept both messages
        held = frozenset((op.tx_id, op.op_index, op.block_id) for op in (old, new))
        sink.lost = lambda: BrokerLoss(held=held, mark="m", reason="the server restarted")  # type: ignore[method-assign]
        sink.mark_kept = lambda loss: None  # type: ignore[method-assign]
    # When term 2's repair pass runs
    repair(db, sink, grace_seconds=30)
    # Then term 1's operation goes again at once, under term 2 (workers drop term 1's message);
    # term 2's own waits for its grace period
    assert [op.tx_id for op in sink.ops] == [old.tx_id]
    assert db.execute("SELECT term FROM expected_operations WHERE tx_id = %s", (old.tx_id,)).fetchone() == (2,)
    sink.ops.clear()
    sink.lost = lambda: None  # type: ignore[method-assign]
    repair(db, sink, grace_seconds=30)
    assert sink.ops == []


def test_watermark_stops_below_the_first_block_with_a_missing_operation(db: psycopg.Connection) -> None:
    # Given a checkpoint at 110 that recorded operations in blocks 101, 105 and 108
    ops = [make_op("freeze", 101), make_op("delegate", 105), make_op("unfreeze", 108)]
    checkpoint_at(db, 110)
    record_expected(db, ops)
    # When the workers persisted 101 and 108 but not 105
    persist(db, ops[0])
    persist(db, ops[2])
    sink = FakeSink()
    result = repair(db, sink, grace_seconds=3600)
    # Then every block up to 104 is complete, one operation is missing, nothing is re-sent yet
    assert (result.checkpoint, result.persisted, result.landed, result.missing) == (110, 104, 2, 1)
    assert (result.resent, sink.ops) == (0, [])
    heads = read_heads(db)
    assert (heads.checkpoint, heads.persisted, heads.in_flight) == (110, 104, 1)
    # And once 105 lands the watermark reaches the checkpoint and nothing is left in flight
    persist(db, ops[1])
    assert repair(db, sink, grace_seconds=3600).persisted == 110
    assert read_heads(db).in_flight == 0


def test_no_checkpoint_no_accounting(db: psycopg.Connection) -> None:
    result = repair(db, FakeSink(), grace_seconds=0)
    assert (result.checkpoint, result.persisted, result.resent) == (None, None, 0)


def test_overdue_operations_are_resent_from_the_record_with_backoff(db: psycopg.Connection) -> None:
    ops = [make_op("freeze", 101), make_op("undelegate", 102)]
    checkpoint_at(db, 102)
    record_expected(db, ops)
    age(db, 60)
    sink = FakeSink()
    # The first repair pass: both are 60 s old with a 10 s grace period: sent again, exactly as recorded
    assert repair(db, sink, grace_seconds=10).resent == 2
    assert sink.ops == ops
    # Another repair pass within the next 10 s sends nothing
    assert repair(db, sink, grace_seconds=10).resent == 0
    # The one after that waits twice as long
    db.execute("UPDATE expected_operations SET due_at = now()")
    assert repair(db, sink, grace_seconds=10).resent == 2
    waits = db.execute("SELECT DISTINCT repairs, extract(epoch FROM due_at - now()) FROM expected_operations")
    assert [(r, float(s)) for r, s in waits.fetchall()] == [(2, 20.0)]


def test_a_backlog_defers_the_repair_until_patience_runs_out(db: psycopg.Connection) -> None:
    op = make_op("freeze", 101)
    checkpoint_at(db, 101)
    record_expected(db, [op])
    busy = FakeSink(backlog=500)
    # Overdue, but the broker still holds messages: it may be among them
    age(db, 3 * 10)
    result = repair(db, busy, grace_seconds=10)
    assert (result.resent, result.deferred, busy.ops) == (0, 1, [])
    # Past the patience it is sent whatever the backlog
    age(db, BACKLOG_PATIENCE * 10 + 1)
    assert repair(db, busy, grace_seconds=10).resent == 1
    # And with an empty queue an overdue operation goes at once
    age(db, 11)
    assert repair(db, FakeSink(), grace_seconds=10).resent == 1


def test_a_transaction_counts_only_in_the_block_it_was_recorded_for(db: psycopg.Connection) -> None:
    # The row still holds the orphaned block's copy; the canonical block's operation is missing.
    op = make_op("freeze", 100, block_id=OLD)
    persist(db, op)
    moved = dataclasses.replace(op, block_num=101, block_id=NEW)
    checkpoint_at(db, 101)
    record_expected(db, [moved])
    assert repair(db, FakeSink(), grace_seconds=3600).persisted == 100
    persist(db, moved)
    assert repair(db, FakeSink(), grace_seconds=3600).persisted == 101


def test_a_lost_confirmation_is_sent_again(db: psycopg.Connection) -> None:
    persist(db, make_op("freeze", 100))  # pending
    checkpoint_at(db, 120)
    db.execute("UPDATE chain_state SET solid_block = 110")  # the listener saw block 110 solidify
    sink = FakeSink()
    assert repair(db, sink, grace_seconds=10).reconfirmed is None  # its confirm may be in the queue
    db.execute("UPDATE stake_records SET updated_at = now() - interval '11 seconds'")
    assert repair(db, FakeSink(backlog=3), grace_seconds=10).reconfirmed is None  # ... behind these
    assert repair(db, sink, grace_seconds=10).reconfirmed == 110
    assert sink.confirmed == [110]


def test_a_lost_revert_is_sent_again_for_pending_and_failed_rows(db: psycopg.Connection) -> None:
    persist(db, make_op("freeze", 100, block_id=OLD, status="failed", contract_ret="REVERT"))
    checkpoint_at(db, 99)
    # (recorded as the listener's rollback does: shown replaced)
    db.execute(
        "INSERT INTO orphaned_blocks (block_num, block_id, orphaned_at, checked_at) VALUES (100, %s, now(), now())",
        (OLD,),
    )
    sink = FakeSink()
    assert repair(db, sink, grace_seconds=10).reverted == 0
    db.execute("UPDATE orphaned_blocks SET orphaned_at = now() - interval '11 seconds'")
    assert repair(db, sink, grace_seconds=10).reverted == 1
    assert sink.reverted == [[(100, OLD)]]
    revert_blocks(db, [[100, OLD]])  # what the worker does with it
    assert repair(db, sink, grace_seconds=10).reverted == 0


def test_heads_tell_the_listener_lag_from_the_workers_lag(db: psycopg.Connection) -> None:
    checkpoint_at(db, 110)
    db.execute("UPDATE chain_state SET head_block = 130, solid_block = 100")
    record_expected(db, [make_op("freeze", 106)])
    repair(db, FakeSink(), grace_seconds=3600)
    heads = read_heads(db).to_dict()
    assert (heads["head"], heads["checkpoint"], heads["persisted"]) == (130, 110, 105)
    assert heads["lag_blocks"] == {"listener": 20, "workers": 5, "total": 25}


def test_the_store_records_at_the_checkpoint_and_a_fork_forgets(clean_db: str) -> None:
    store = PgStore(clean_db, term=1)
    ops = [make_op("freeze", 101), make_op("freeze", 104)]
    try:
        store.save_checkpoint(104, BLOCK_ID, 110, 90, [(n, f"id{n}", f"id{n - 1}") for n in (101, 104)], ops)
        with psycopg.connect(clean_db, autocommit=True) as conn:
            keys = conn.execute("SELECT block_num, payload->>'tx_id' FROM expected_operations ORDER BY 1").fetchall()
            assert keys == [(101, ops[0].tx_id), (104, ops[1].tx_id)]
            persist(conn, ops[0])
            assert store.repair(FakeSink(), grace_seconds=3600).persisted == 103
            # When a fork takes block 104 (and its operation) off the chain
            store.rollback(102, "id102", [(104, "id104")])
            assert conn.execute("SELECT block_num FROM expected_operations").fetchall() == []
            assert read_heads(conn).persisted == 102
            assert store.repair(FakeSink(), grace_seconds=0).persisted == 102
    finally:
        store.close()


def test_an_operation_listed_twice_is_recorded_once(db: psycopg.Connection) -> None:
    op = make_op("freeze", 101)
    checkpoint_at(db, 101)
    record_expected(db, [op, op])
    record_expected(db, [op])  # the batch enqueued again after a restart
    assert db.execute("SELECT count(*) FROM expected_operations").fetchone() == (1,)


# -- a broker that lost its messages ----------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def wiped_broker(request: pytest.FixtureRequest) -> Iterator[tuple[RecordingSink, Callable[[], None]]]:
    """A sink on a real broker of the test's own, and a function that makes the broker lose
    everything: a Redis restarted without persistence, a RabbitMQ node that lost its data
    directory (every queue of the test gone, as a node reset leaves them)."""
    queue = f"acct-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        server = PrivateRedis()
        server.start()

        def wipe() -> None:
            server.stop(signal.SIGKILL)
            server.start()

        broker = create_broker(server.url())
        sink = RecordingSink(broker, queue)
        yield sink, wipe
        sink.close()
        broker.close()
        server.close()
    else:
        broker = create_broker(TEST_RABBITMQ_URL)
        sink = RecordingSink(broker, queue)
        yield sink, lambda: delete_rabbitmq_queues(TEST_RABBITMQ_URL, queue)
        sink.close()
        broker.close()
        delete_rabbitmq_queues(TEST_RABBITMQ_URL, queue)


def test_a_broker_that_lost_its_queue_gets_the_operations_in_flight_at_once(
    db: psycopg.Connection, wiped_broker: tuple[RecordingSink, Callable[[], None]]
) -> None:
    sink, wipe = wiped_broker
    # Given operations recorded at the checkpoint and enqueued by the listener, and a pass made
    ops = [make_op("freeze", 101), make_op("delegate", 102)]
    checkpoint_at(db, 102)
    record_expected(db, ops)
    sink.publish(ops)
    repair(db, sink, grace_seconds=3600)
    sink.sent.clear()
    # When the broker loses its messages, and the listener goes on sending (a backlog again)
    wipe()
    newer = make_op("freeze", 103)
    checkpoint_at(db, 103)
    record_expected(db, [newer])
    sink.publish([newer])
    sink.sent.clear()
    result = repair(db, sink, grace_seconds=3600)
    # Then the lost operations are sent again at once, not a grace period (or a backlog) later
    assert result.broker_loss is not None
    assert set(ops) <= set(sink.sent)
    # (RabbitMQ's messages cannot be read, so there the newer one goes again as well)
    assert set(sink.sent) <= {*ops, newer}
    # And once marked kept, the next pass sends nothing
    sink.sent.clear()
    assert repair(db, sink, grace_seconds=3600).broker_loss is None
    assert sink.sent == []


def test_a_restarted_redis_broker_gets_again_only_what_it_no_longer_holds(db: psycopg.Connection) -> None:
    server = PrivateRedis(aof=True)
    server.start()
    broker = create_broker(server.url())
    sink = RecordingSink(broker, "acct")
    try:
        # Given two operations in two messages, recorded, and a pass made
        kept, lost = make_op("freeze", 101), make_op("freeze", 102)
        checkpoint_at(db, 102)
        record_expected(db, [kept, lost])
        sink.publish([kept])
        sink.publish([lost])
        repair(db, sink, grace_seconds=3600)
        sink.sent.clear()
        # When the server restarts (AOF keeps its data) short of the last message, as a crash
        # loses the last second's writes, or a snapshot or a promoted replica what came after them
        server.stop(signal.SIGTERM)
        server.start()
        client = broker.client  # type: ignore[attr-defined]
        for message_id, data in client.hgetall("dramatiq:acct.msgs").items():
            if lost.tx_id.encode() in data:
                client.hdel("dramatiq:acct.msgs", message_id)
                client.lrem("dramatiq:acct", 0, message_id)
        result = repair(db, sink, grace_seconds=3600)
        # Then only the operation it no longer holds is sent again, at once
        assert result.broker_loss == "the server restarted"
        assert sink.sent == [lost]
    finally:
        sink.close()
        broker.close()
        server.close()
