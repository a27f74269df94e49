"""Where the listener's operations go: persist_operations messages, one per owner account and up to
ledger.coordination.queue.OPERATIONS_PER_MESSAGE operations."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import dramatiq

from ledger.coordination.queue import confirm_message, operations_messages, queued_messages, revert_message
from ledger.domain import Operation


class Sink(Protocol):
    def publish(self, operations: Iterable[Operation]) -> int: ...

    def confirm(self, solid_block: int) -> None: ...

    def revert(self, blocks: list[tuple[int, str]]) -> None: ...

    def backlog(self) -> int: ...


class BrokerSink:
    """Enqueues a batch's groups through a few threads: each enqueue is one broker round trip (one
    publisher confirm on RabbitMQ), and waiting on them one after another would add up."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str, threads: int = 8) -> None:
        self._broker = broker
        self._queue = queue_name
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="enqueue")

    def publish(self, operations: Iterable[Operation]) -> int:
        """Enqueue `operations`; return how many (not how many messages)."""
        ops = list(operations)
        messages = operations_messages(ops, self._queue)
        # list() waits for all of them and re-raises the first failure, so the caller never
        # advances its checkpoint past a message that was not enqueued.
        list(self._pool.map(self._broker.enqueue, messages))
        return len(ops)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def confirm(self, solid_block: int) -> None:
        self._broker.enqueue(confirm_message(solid_block, self._queue))

    def revert(self, blocks: list[tuple[int, str]]) -> None:
        self._broker.enqueue(revert_message(blocks, self._queue))

    def backlog(self) -> int:
        """Messages the broker holds for the queue (the accounting's repair holds back behind a backlog)."""
        return queued_messages(self._broker, self._queue)
