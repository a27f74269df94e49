"""The checkpoint loop, without a chain: a stub adapter, an in-memory store and sink."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

import pytest

from ledger.chain.node import BudgetUnavailable, NodeUnavailable, RateLimited
from ledger.chain.parser import BlockParse, ParseIssue
from ledger.coordination.lease import CheckpointFenced
from ledger.coordination.queue import BrokerLoss
from ledger.domain import Operation
from listener.streamer import QUIET_SECONDS, Streamer

OWNER = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"


def _op(num: int, block_id: str) -> Operation:
    return Operation(
        tx_id=f"{num:064x}",
        op_index=0,
        block_num=num,
        block_id=block_id,
        tx_index=0,
        block_time_ms=num * 3000,
        contract_type="FreezeBalanceV2Contract",
        kind="freeze",
        owner_address=OWNER,
        resource="ENERGY",
        amount=num,
    )


def _block_id(n: int, branch: str = "a") -> str:
    return f"{n:016x}" + branch * 48


class StubAdapter:
    """A chain of blocks whose ids carry a branch letter; `fork_from` switches the tail's branch."""

    def __init__(self, head: int, solid_lag: int = 19) -> None:
        self.head = head
        self.solid_lag = solid_lag
        self.fail_next: Exception | None = None
        self.exports: list[tuple[int, int]] = []
        self.fork_at: int | None = None  # blocks from here on are on branch "b"

    def _id(self, n: int) -> str:
        return _block_id(n, "b" if self.fork_at is not None and n >= self.fork_at else "a")

    def block_id(self, num: int) -> str | None:
        return self._id(num) if num <= self.head else None

    def head_number(self) -> int:
        return self.head

    def solid_number(self) -> int:
        return self.head - self.solid_lag

    def follow(self, start: int, limit: int, tracked: object, solid: int) -> list[BlockParse]:
        end = min(start + min(limit, 100), self.head + 1)
        return self.export(start, end, tracked, solid) if end > start else []

    def export(self, start: int, end: int, tracked: object, solid: int) -> list[BlockParse]:
        if self.fail_next:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.exports.append((start, end))
        return [
            BlockParse(
                number=n,
                block_id=self._id(n),
                parent_hash=self._id(n - 1),
                timestamp_ms=n * 3000,
                operations=[_op(n, self._id(n))],
                issues=[ParseIssue(n, "ab" * 32, "bad")] if n == 7 else [],
            )
            for n in range(start, end)
        ]


class MemoryStore:
    def __init__(self, checkpoint: int | None = None) -> None:
        self.checkpoint = checkpoint
        self.checkpoint_id = _block_id(checkpoint) if checkpoint is not None else None
        self.issues: list[ParseIssue] = []
        self.fail_saves = 0
        self.recent: dict[int, str] = {}
        self.orphaned: list[tuple[int, str]] = []
        self.expected: list[Operation] = []
        self.solid = 0  # chain_state's solidified head

    def load_checkpoint(self) -> tuple[int, str | None] | None:
        return None if self.checkpoint is None else (self.checkpoint, self.checkpoint_id)

    def save_checkpoint(
        self,
        block_num: int,
        block_id: str,
        head: int,
        solid: int,
        blocks: Sequence[tuple[int, str, str]] = (),
        operations: Sequence[Operation] = (),
        block_time_ms: int | None = None,
        block_times: Sequence[tuple[int, int]] = (),
    ) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise ConnectionError("database down")
        self.checkpoint, self.checkpoint_id = block_num, block_id
        self.recent.update({num: bid for num, bid, _ in blocks})
        self.expected.extend(operations)
        self.solid = max(self.solid, solid)

    def note_solid(self, solid: int) -> None:
        self.solid = max(self.solid, solid)

    def recent_block_id(self, block_num: int) -> str | None:
        return self.recent.get(block_num)

    def rollback(
        self, ancestor: int, ancestor_id: str | None, off_chain: Sequence[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        deleted = {(n, b) for n, b in self.recent.items() if n > ancestor}
        for n, _ in deleted:
            del self.recent[n]
        gone = sorted(deleted & set(off_chain))
        self.orphaned.extend(gone)
        self.checkpoint, self.checkpoint_id = ancestor, ancestor_id
        return gone

    def tracked(self) -> frozenset[str]:
        return frozenset({OWNER})

    def record_issues(self, issues: list[ParseIssue]) -> None:
        self.issues.extend(issues)


class ListSink:
    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.confirmed: list[int] = []
        self.reverted: list[list[tuple[int, str]]] = []
        self.fail_next = False

    def publish(self, operations: Iterable[Operation]) -> int:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker down")
        ops = list(operations)
        self.ops.extend(ops)
        return len(ops)

    def confirm(self, solid_block: int) -> None:
        self.confirmed.append(solid_block)

    def revert(self, blocks: list[tuple[int, str]]) -> None:
        self.reverted.append(blocks)

    def backlog(self) -> int:
        return 0

    def lost(self) -> BrokerLoss | None:
        return None

    def mark_kept(self, loss: BrokerLoss) -> None:
        raise AssertionError("nothing was lost")


def _streamer(adapter: StubAdapter, store: MemoryStore, sink: ListSink, **kw: object) -> Streamer:
    return Streamer(adapter, store, sink, batch_blocks=10, poll_interval=0, sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def _run_until_caught_up(streamer: Streamer, limit: int = 100) -> None:
    for _ in range(limit):
        try:
            if streamer.sync_cycle():
                return
        except Exception as exc:  # noqa: BLE001 - the loop's own retry path takes any failure
            streamer._on_failure(exc)
    raise AssertionError("did not catch up")


def test_catches_up_from_start_block_in_batches_and_checkpoints_each() -> None:
    adapter, store, sink = StubAdapter(head=35), MemoryStore(), ListSink()
    streamer = _streamer(adapter, store, sink, start_block=5)
    _run_until_caught_up(streamer)
    assert [op.block_num for op in sink.ops] == list(range(5, 36))
    assert adapter.exports == [(5, 15), (15, 25), (25, 35), (35, 36)]
    assert store.checkpoint == 35
    assert sink.confirmed[-1] == 35 - 19
    assert [i.block_num for i in store.issues] == [7]
    # each checkpoint recorded exactly what its batch enqueued (the accounting's expectations)
    assert store.expected == sink.ops


def test_default_start_is_the_head() -> None:
    adapter, store, sink = StubAdapter(head=1000), MemoryStore(), ListSink()
    _run_until_caught_up(_streamer(adapter, store, sink))
    assert [op.block_num for op in sink.ops] == [1000]


def test_resumes_from_stored_checkpoint_and_ignores_start_block() -> None:
    adapter, store, sink = StubAdapter(head=30), MemoryStore(checkpoint=20), ListSink()
    _run_until_caught_up(_streamer(adapter, store, sink, start_block=1))
    assert [op.block_num for op in sink.ops] == list(range(21, 31))


def test_enqueue_failure_does_not_advance_the_checkpoint() -> None:
    adapter, store, sink = StubAdapter(head=12), MemoryStore(checkpoint=0), ListSink()
    sink.fail_next = True
    streamer = _streamer(adapter, store, sink)
    with pytest.raises(ConnectionError):
        streamer.sync_cycle()
    assert store.checkpoint == 0
    _run_until_caught_up(streamer)
    assert sorted({op.block_num for op in sink.ops}) == list(range(1, 13))


def test_checkpoint_failure_re_enqueues_the_batch_and_skips_nothing() -> None:
    adapter, store, sink = StubAdapter(head=10), MemoryStore(checkpoint=0), ListSink()
    store.fail_saves = 1
    _run_until_caught_up(_streamer(adapter, store, sink))
    blocks = [op.block_num for op in sink.ops]
    assert sorted(set(blocks)) == list(range(1, 11))
    assert len(blocks) == 20  # the first batch went out twice: at-least-once, deduplicated by the worker
    assert store.checkpoint == 10


def test_node_failure_retries_the_same_range() -> None:
    adapter, store, sink = StubAdapter(head=10), MemoryStore(checkpoint=0), ListSink()
    adapter.fail_next = TimeoutError("node timed out")
    _run_until_caught_up(_streamer(adapter, store, sink))
    assert [op.block_num for op in sink.ops] == list(range(1, 11))


def test_run_stops_on_event() -> None:
    adapter, store, sink = StubAdapter(head=10), MemoryStore(checkpoint=10), ListSink()
    stop = threading.Event()
    streamer = Streamer(adapter, store, sink, poll_interval=0.01, stop=stop)
    thread = threading.Thread(target=streamer.run)
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("depth", [1, 5])
def test_fork_rolls_back_to_the_common_ancestor_and_reprocesses_the_new_branch(depth: int) -> None:
    # Given a listener at the head of branch "a"
    adapter, store, sink = StubAdapter(head=100), MemoryStore(checkpoint=80), ListSink()
    streamer = _streamer(adapter, store, sink)
    _run_until_caught_up(streamer)
    # When the last `depth` blocks are replaced by a longer branch "b"
    adapter.fork_at = 101 - depth
    adapter.head = 101
    _run_until_caught_up(streamer)
    # Then exactly the replaced blocks are reverted, and the new branch is published
    gone = [(n, _block_id(n, "a")) for n in range(101 - depth, 101)]
    assert sink.reverted == [gone]
    assert store.orphaned == gone
    assert store.checkpoint == 101 and store.checkpoint_id == _block_id(101, "b")
    republished = [op.block_id for op in sink.ops if op.block_num >= 101 - depth]
    assert republished[-(depth + 1) :] == [_block_id(n, "b") for n in range(101 - depth, 102)]
    assert streamer.progress.forks == 1


def test_fork_survives_a_restart_from_the_stored_checkpoint() -> None:
    adapter, store, sink = StubAdapter(head=50), MemoryStore(checkpoint=40), ListSink()
    _run_until_caught_up(_streamer(adapter, store, sink))
    adapter.fork_at, adapter.head = 49, 52
    restarted = _streamer(adapter, store, sink)
    _run_until_caught_up(restarted)
    assert store.orphaned == [(49, _block_id(49)), (50, _block_id(50))]
    assert store.checkpoint_id == _block_id(52, "b")


def test_a_fork_orphans_only_blocks_its_walk_saw_replaced() -> None:
    # Given a listener at block 100 of branch "a", and recent blocks above its checkpoint that it
    # did not record (another term's, on the branch that is canonical now)
    adapter, store, sink = StubAdapter(head=100), MemoryStore(checkpoint=80), ListSink()
    streamer = _streamer(adapter, store, sink)
    _run_until_caught_up(streamer)
    adapter.fork_at, adapter.head = 98, 110
    store.recent.update({n: _block_id(n, "b") for n in range(101, 111)})
    # When it finds the fork
    _run_until_caught_up(streamer)
    # Then only the blocks the node answered other blocks for are orphaned and reverted
    gone = [(n, _block_id(n, "a")) for n in (98, 99, 100)]
    assert store.orphaned == gone
    assert sink.reverted == [gone]


def test_a_fork_sends_its_revert_only_after_the_fenced_rollback() -> None:
    # Given a listener whose term is over: another term moved the checkpoint on
    adapter, store, sink = StubAdapter(head=100), MemoryStore(checkpoint=80), ListSink()
    streamer = _streamer(adapter, store, sink)
    _run_until_caught_up(streamer)

    def fenced(ancestor: int, ancestor_id: str | None, off_chain: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        raise CheckpointFenced("checkpoint 'main' is held by another term")

    store.rollback = fenced  # type: ignore[method-assign]
    # When it finds a fork
    adapter.fork_at, adapter.head = 99, 101
    streamer.run()
    # Then it stops at the refused rollback, with no revert sent and nothing orphaned
    assert sink.reverted == []
    assert store.orphaned == []


def test_run_repairs_between_cycles_at_most_once_per_interval() -> None:
    adapter, store, sink = StubAdapter(head=40), MemoryStore(), ListSink()
    calls: list[int | None] = []
    stop = threading.Event()

    def repair() -> None:
        calls.append(store.checkpoint)
        if len(calls) == 2:
            stop.set()

    streamer = Streamer(
        adapter,
        store,
        sink,
        start_block=1,
        batch_blocks=10,
        poll_interval=0,
        stop=stop,
        repair=repair,
        repair_interval=0.05,
    )
    thread = threading.Thread(target=streamer.run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    # the first repair pass before the first batch (a new term re-sends at once what earlier terms
    # recorded); the next one an interval later, between batches, never mid-batch
    assert calls[0] is None and calls[1] is not None and calls[1] >= 10


def test_fork_found_after_the_solid_head_jumped_past_it_is_still_rolled_back() -> None:
    # Given a listener at the head of branch "a" (block 100)
    adapter, store, sink = StubAdapter(head=100), MemoryStore(checkpoint=80), ListSink()
    streamer = _streamer(adapter, store, sink)
    _run_until_caught_up(streamer)
    # When blocks 98..100 were replaced while unsolid, and 60 blocks followed before the next poll
    # (the node's solid head, 141, is now past the fork)
    adapter.fork_at = 98
    adapter.head = 160
    _run_until_caught_up(streamer)
    # Then the replaced blocks are still orphaned and the new branch is published
    gone = [(n, _block_id(n, "a")) for n in range(98, 101)]
    assert sink.reverted == [gone]
    assert store.checkpoint == 160 and store.checkpoint_id == _block_id(160, "b")
    assert {op.block_id for op in sink.ops if op.block_num == 98} == {_block_id(98, "a"), _block_id(98, "b")}


def test_records_an_earlier_term_sent_pending_are_confirmed_when_the_chain_stops() -> None:
    # Given a term that followed the chain to block 100, sending its records as pending, and
    # ended there (a PostgreSQL outage took its lease)
    adapter, store, sink = StubAdapter(head=100), MemoryStore(checkpoint=80), ListSink()
    _run_until_caught_up(_streamer(adapter, store, sink))
    # When the next term starts from that checkpoint 5 blocks behind the head, follows 13 more
    # blocks one at a time, and the chain stops (with 98..100 solidified, its own not yet)
    adapter.head = 105
    successor = _streamer(adapter, store, sink)
    _run_until_caught_up(successor)
    for _ in range(13):
        adapter.head += 1
        _run_until_caught_up(successor)
    successor._block_seen_at -= QUIET_SECONDS
    successor.sync_cycle()
    # Then its last confirmation reaches the solidified head: the earlier term's records up to it
    # are confirmed, though this term never sent them (no other confirmation would come)
    assert sink.confirmed[-1] == adapter.head - adapter.solid_lag == 99


def test_every_confirmation_is_stored_before_it_is_sent() -> None:
    # A quiet chain's confirmation is sent with no batch saved: if only its message carried the
    # solidified head, a broker losing it would leave the records up to that head pending (the
    # accounting re-sends a lost confirmation, and workers store records, by the stored head)
    store = MemoryStore(checkpoint=80)

    class StoredFirst(ListSink):
        def confirm(self, solid_block: int) -> None:
            assert store.solid >= solid_block, f"confirmation of {solid_block} sent, stored head {store.solid}"
            super().confirm(solid_block)

    adapter, sink = StubAdapter(head=100), StoredFirst()
    streamer = _streamer(adapter, store, sink)
    _run_until_caught_up(streamer)
    adapter.head += 3
    _run_until_caught_up(streamer)
    saved = store.solid
    # When the chain goes quiet, the last confirmation is sent by a cycle that saves nothing
    streamer._block_seen_at -= QUIET_SECONDS
    streamer.sync_cycle()
    assert sink.confirmed[-1] == adapter.head - adapter.solid_lag > saved
    assert store.solid == sink.confirmed[-1]


def test_a_node_behind_the_checkpoint_is_reported_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the streamer's clock for the once-a-minute line
    adapter, store, sink = StubAdapter(head=60), MemoryStore(checkpoint=100), ListSink()
    streamer = _streamer(adapter, store, sink)
    with caplog.at_level(logging.INFO, logger="listener.streamer"):
        # The first empty probe asks the head: 40 below the checkpoint, an error at once.
        assert streamer.sync_cycle() is True
        assert (streamer.state.name, streamer.state.behind_by) == ("node_behind", 40)
        assert streamer.state.detail.startswith("node behind the checkpoint by 40 blocks")
        assert streamer.idle_wait() >= 3.0  # one probe a slot: the node gains at most a block a slot
        for _ in range(20):  # every probe while behind asks the head again; no new line within the minute
            clock[0] += 2.0
            streamer.sync_cycle()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage().split(":")[0] for r in errors] == ["node behind the checkpoint by 40 blocks"]
        clock[0] += 21.0  # a minute after the first line, the next one
        adapter.head = 70
        streamer.sync_cycle()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage().split(":")[0] for r in errors][-1] == "node behind the checkpoint by 30 blocks"
        assert len(errors) == 2 and streamer.state.behind_by == 30
        # Nothing was read or sent meanwhile, and the checkpoint stayed.
        assert sink.ops == [] and store.checkpoint == 100 and adapter.exports == []
        # When the node passes the checkpoint, the listener reads again and says so.
        adapter.head = 103
        _run_until_caught_up(streamer)
    assert [op.block_num for op in sink.ops] == [101, 102, 103]
    assert streamer.state.name == "following"
    assert any("no longer behind the checkpoint" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("exc", "state"),
    [
        (NodeUnavailable("getblockbylimitnext: timed out"), "node_unreachable"),
        (RateLimited("getblockbylimitnext: rate limited (HTTP 429)", 2.0), "rate_limited"),
        (BudgetUnavailable("request budget: day used up", 60.0), "rate_limited"),
        (ConnectionError("database down at 10.0.0.5"), "failing"),
    ],
)
def test_a_failed_cycle_says_why_in_the_state(exc: Exception, state: str) -> None:
    adapter, store, sink = StubAdapter(head=30), MemoryStore(checkpoint=20), ListSink()
    streamer = _streamer(adapter, store, sink)
    adapter.fail_next = exc
    with pytest.raises(type(exc)):
        streamer.sync_cycle()
    streamer._on_failure(exc)
    assert streamer.state.name == state
    # A node's message is shown (the node client redacts it); anything else by its type only.
    assert streamer.state.detail == (type(exc).__name__ if state == "failing" else str(exc))
    _run_until_caught_up(streamer)
    assert streamer.state.name == "following"
