"""Where the listener's operations go: one Dramatiq message per operation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import dramatiq

from ledger.domain import Operation
from ledger.queue import confirm_message, operation_message, revert_message


class Sink(Protocol):
    def publish(self, operations: Iterable[Operation]) -> int: ...

    def confirm(self, solid_block: int) -> None: ...

    def revert(self, blocks: list[tuple[int, str]]) -> None: ...


class BrokerSink:
    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self._broker = broker
        self._queue = queue_name

    def publish(self, operations: Iterable[Operation]) -> int:
        count = 0
        for op in operations:
            self._broker.enqueue(operation_message(op, self._queue))
            count += 1
        return count

    def confirm(self, solid_block: int) -> None:
        self._broker.enqueue(confirm_message(solid_block, self._queue))

    def revert(self, blocks: list[tuple[int, str]]) -> None:
        self._broker.enqueue(revert_message(blocks, self._queue))
