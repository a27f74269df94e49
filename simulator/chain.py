"""The chain store: blocks by number and id, transactions by id, stake transactions in order.

Thread-safe: the producer appends while HTTP threads read. Blocks are immutable, so readers take
the lock only to look things up, never while rendering.

Forks: `replace_from` drops the blocks from a height on and appends replacements. Rendered
bytes are cached by block id (not number), so replaced blocks can never be served stale. Stake
transactions of dropped blocks that do not come back are kept as orphans, for /sim/truth.
Listeners (the blockTrigger feed, the render cache) see every change as (removed, added) blocks.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import Block, Tx


@dataclass(frozen=True, slots=True)
class Heights:
    head: int | None
    solid: int | None


# (removed blocks newest first, added blocks oldest first, heights after the change)
ChainListener = Callable[[Sequence[Block], Sequence[Block], Heights], None]


class ChainStore:
    def __init__(self, start_block: int, solid_lag: int) -> None:
        self._lock = threading.RLock()
        self._start = start_block
        self._solid_lag = solid_lag
        self._blocks: list[Block] = []  # index = number - start_block
        self._by_id: dict[str, Block] = {}
        self._txs: dict[str, tuple[Block, Tx]] = {}
        self._stake: list[tuple[Block, Tx]] = []  # transactions that decompose into ledger rows
        # tx id -> (the last replaced block it was in, tx): stake txs that left the canonical chain
        # One entry per truth row (tx_id, op_index): a transaction re-included after a fork may
        # yield fewer rows than before, and a later fork may drop it again; each row that ever
        # left the chain stays an orphan until the same row is canonical again.
        self._orphans: dict[tuple[str, int], tuple[Block, Tx]] = {}
        self._listeners: list[ChainListener] = []

    @property
    def start_block(self) -> int:
        return self._start

    # -- writes --------------------------------------------------------------------------------

    def add_listener(self, listener: ChainListener) -> None:
        """Called after each change, outside the lock (so a slow listener cannot stall readers).
        Writers are serialised by the node, so listeners see changes in chain order."""
        with self._lock:
            self._listeners.append(listener)

    def append(self, block: Block) -> None:
        self._append(block)
        self._notify((), (block,))

    def _notify(self, removed: Sequence[Block], added: Sequence[Block]) -> None:
        heights = self.heights()
        for listener in list(self._listeners):
            listener(removed, added, heights)

    def _append(self, block: Block) -> None:
        with self._lock:
            head = self._blocks[-1] if self._blocks else None
            expected = head.number + 1 if head else self._start
            if block.number != expected:
                raise ValueError(f"block {block.number} appended, expected {expected}")
            if head is not None and block.parent_hash != head.block_id:
                raise ValueError(f"block {block.number} does not link to {head.block_id}")
            self._blocks.append(block)
            self._by_id[block.block_id] = block
            for tx in block.txs:
                self._txs[tx.tx_id] = (block, tx)
                if tx.rows:
                    self._stake.append((block, tx))

    def replace_from(self, number: int, blocks: Sequence[Block]) -> list[Block]:
        """Forget blocks >= number (never below the solidified head), append `blocks`.
        Returns the dropped blocks, oldest first."""
        with self._lock:
            solid = self.heights().solid
            if solid is not None and number <= solid:
                raise ValueError("cannot replace solidified blocks")
            dropped = self._blocks[max(number - self._start, 0) :]
            del self._blocks[max(number - self._start, 0) :]
            for block in dropped:
                self._by_id.pop(block.block_id, None)
                for tx in block.txs:
                    self._txs.pop(tx.tx_id, None)
                    for row in tx.rows:
                        self._orphans[(tx.tx_id, row.op_index)] = (block, dataclasses.replace(tx, rows=(row,)))
            self._stake = [(b, tx) for b, tx in self._stake if b.number < number]
            for block in blocks:
                self._append(block)
            # Rows of re-included transactions are canonical again, not orphans.
            for key in [key for key in self._orphans if key[0] in self._txs]:
                if any(row.op_index == key[1] for row in self._txs[key[0]][1].rows):
                    del self._orphans[key]
        self._notify(dropped[::-1], blocks)
        return dropped

    # -- reads ---------------------------------------------------------------------------------

    def heights(self) -> Heights:
        with self._lock:
            if not self._blocks:
                return Heights(None, None)
            head = self._blocks[-1].number
            solid = head - self._solid_lag
            return Heights(head, solid if solid >= self._start else None)

    def head(self) -> Block | None:
        with self._lock:
            return self._blocks[-1] if self._blocks else None

    def block(self, number: int, limit: int | None = None) -> Block | None:
        """Block `number`, or None if it does not exist or lies above `limit`."""
        with self._lock:
            if limit is not None and number > limit:
                return None
            index = number - self._start
            return self._blocks[index] if 0 <= index < len(self._blocks) else None

    def by_id(self, block_id: str) -> Block | None:
        with self._lock:
            return self._by_id.get(block_id)

    def blocks(self, start: int, end: int, limit: int | None = None) -> list[Block]:
        """Existing blocks in [start, end) that are <= limit."""
        with self._lock:
            if limit is not None:
                end = min(end, limit + 1)
            lo = max(start - self._start, 0)
            hi = max(min(end - self._start, len(self._blocks)), lo)
            return self._blocks[lo:hi]

    def recent(self, count: int) -> list[Block]:
        with self._lock:
            return self._blocks[-count:]

    def tx(self, tx_id: str) -> tuple[Block, Tx] | None:
        with self._lock:
            return self._txs.get(tx_id)

    def stake_snapshot(self) -> tuple[Heights, list[tuple[Block, Tx]], list[tuple[Block, Tx]]]:
        """Heights, canonical stake transactions and orphaned ones, taken together so truth
        statuses are consistent."""
        with self._lock:
            return self.heights(), list(self._stake), list(self._orphans.values())
