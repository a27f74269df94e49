"""NodeAdapter.follow's read-ahead: while catching up, the next batch is read during this one's
enqueue and checkpoint, and is used only for exactly the range and tracked set it was read for."""

from __future__ import annotations

import threading
from typing import Any

from listener.adapter import NodeAdapter


def _block(num: int) -> dict[str, Any]:
    return {
        "blockID": f"{num:016x}" + "cd" * 24,
        "block_header": {
            "raw_data": {"number": num, "timestamp": 1_700_000_000_000 + 3000 * num, "parentHash": _parent(num)}
        },
    }


def _parent(num: int) -> str:
    return f"{num - 1:016x}" + "cd" * 24


class FakeNode:
    """The block reads of a TronNode over a chain of empty blocks 0..head."""

    def __init__(self, head: int) -> None:
        self.head = head
        self.ranges: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.fail_once: set[int] = set()  # reads starting at these fail, once each

    def blocks(self, start: int, end: int, *, skim: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            self.ranges.append((start, end))
            if start in self.fail_once:
                self.fail_once.discard(start)
                raise ConnectionError("node went away")
            return [_block(n) for n in range(start, min(end, self.head + 1))]

    def block(self, num: int) -> dict[str, Any] | None:
        return _block(num) if num <= self.head else None

    def transaction_infos(self, num: int, *, skim: bool = False) -> list[Any]:
        return []


def _adapter(node: FakeNode) -> NodeAdapter:
    return NodeAdapter(node)  # type: ignore[arg-type]


def _numbers(blocks: list[Any]) -> list[int]:
    return [b.number for b in blocks]


def test_a_full_batch_reads_the_next_one_ahead_and_the_next_call_uses_it() -> None:
    node = FakeNode(head=250)
    adapter = _adapter(node)
    tracked = frozenset({"T1"})
    assert _numbers(adapter.follow(1, 100, tracked, 0)) == list(range(1, 101))
    assert _numbers(adapter.follow(101, 100, tracked, 0)) == list(range(101, 201))
    assert _numbers(adapter.follow(201, 100, tracked, 0)) == list(range(201, 251))  # short: at the head
    assert adapter.follow(251, 100, tracked, 0) == []
    adapter.close()
    # One read per range, each read ahead of the call that used it; a short batch reads nothing
    # ahead (at the head each probe stays one request).
    assert node.ranges == [(1, 101), (101, 201), (201, 301), (251, 351)]


def test_a_read_ahead_for_another_range_or_tracked_set_is_dropped() -> None:
    node = FakeNode(head=500)
    adapter = _adapter(node)
    adapter.follow(1, 100, frozenset({"T1"}), 0)
    # The checkpoint moved back (a fork): the read-ahead of 101.. is not used.
    assert _numbers(adapter.follow(50, 100, frozenset({"T1"}), 0)) == list(range(50, 150))
    # Accounts were added: a read-ahead made for the old set is not used either.
    assert _numbers(adapter.follow(150, 100, frozenset({"T1", "T2"}), 0)) == list(range(150, 250))
    adapter.close()
    assert node.ranges == [(1, 101), (101, 201), (50, 150), (150, 250), (150, 250), (250, 350)]


def test_a_failed_or_empty_read_ahead_is_read_again() -> None:
    node = FakeNode(head=100)
    adapter = _adapter(node)
    tracked = frozenset({"T1"})
    adapter.follow(1, 100, tracked, 0)  # reads 101.. ahead: nothing there yet
    node.head = 150  # the chain moved on meanwhile: the empty answer is stale, not used
    assert _numbers(adapter.follow(101, 100, tracked, 0)) == list(range(101, 151))
    adapter.close()
    assert node.ranges == [(1, 101), (101, 201), (101, 201)]

    node.head, node.ranges = 300, []
    node.fail_once = {101}
    adapter = _adapter(node)
    adapter.follow(1, 100, tracked, 0)  # its read-ahead of 101.. fails
    assert _numbers(adapter.follow(101, 100, tracked, 0)) == list(range(101, 201))  # read again
    assert node.ranges[:3] == [(1, 101), (101, 201), (101, 201)]
