"""The checkpoint loop, without a chain: a stub adapter, an in-memory store and sink."""

from __future__ import annotations

import threading

import pytest

from ledger.domain import Operation
from ledger.parser import BlockParse, ParseIssue
from listener.streamer import Streamer

OWNER = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"


def _op(num: int) -> Operation:
    return Operation(
        tx_id=f"{num:064x}", op_index=0, block_num=num, block_id=f"{num:016x}" + "0" * 48, tx_index=0,
        block_time_ms=num * 3000, contract_type="FreezeBalanceV2Contract", kind="freeze",
        owner_address=OWNER, resource="ENERGY", amount=num,
    )


class StubAdapter:
    def __init__(self, head: int, solid_lag: int = 19) -> None:
        self.head = head
        self.solid_lag = solid_lag
        self.fail_next: Exception | None = None
        self.exports: list[tuple[int, int]] = []

    def head_number(self) -> int:
        return self.head

    def solid_number(self) -> int:
        return self.head - self.solid_lag

    def export(self, start: int, end: int, tracked: object, solid: int) -> list[BlockParse]:
        if self.fail_next:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.exports.append((start, end))
        return [
            BlockParse(
                number=n, block_id=f"{n:016x}" + "0" * 48, parent_hash="", timestamp_ms=n * 3000,
                operations=[_op(n)], issues=[ParseIssue(n, "ab" * 32, "bad")] if n == 7 else [],
            )
            for n in range(start, end)
        ]


class MemoryStore:
    def __init__(self, checkpoint: int | None = None) -> None:
        self.checkpoint = checkpoint
        self.issues: list[ParseIssue] = []
        self.fail_saves = 0

    def load_checkpoint(self) -> int | None:
        return self.checkpoint

    def save_checkpoint(self, block_num: int, block_id: str, head: int, solid: int) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise ConnectionError("database down")
        self.checkpoint = block_num

    def tracked(self) -> frozenset[str]:
        return frozenset({OWNER})

    def record_issues(self, issues: list[ParseIssue]) -> None:
        self.issues.extend(issues)


class ListSink:
    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.confirmed: list[int] = []
        self.fail_next = False

    def publish(self, operations: list[Operation]) -> int:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker down")
        self.ops.extend(operations)
        return len(operations)

    def confirm(self, solid_block: int) -> None:
        self.confirmed.append(solid_block)


def _streamer(adapter: StubAdapter, store: MemoryStore, sink: ListSink, **kw: object) -> Streamer:
    return Streamer(adapter, store, sink, batch_blocks=10, poll_interval=0, sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def _run_until_caught_up(streamer: Streamer, limit: int = 100) -> None:
    for _ in range(limit):
        try:
            if streamer.sync_cycle():
                return
        except Exception as exc:  # the loop's own retry path
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
    streamer = Streamer(adapter, store, sink, poll_interval=0.01, stop=stop)  # type: ignore[arg-type]
    thread = threading.Thread(target=streamer.run)
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
