"""Account state at any block of the canonical chain, for the account endpoints and /sim/account-state.

It does not read the generator's live state: it replays the stored chain (successful stake
transactions, each at its parent block's time) from the opening state with the same actuator
rules, so a fork is "rolled back" simply by replaying the new canonical blocks, and a state the
generator got wrong would show up as a mismatch with this replay (tests compare the two).

Replays are cheap enough for tests when they start near the target: the view keeps the latest
replayed state and a checkpoint every CHECKPOINT_EVERY blocks, each with its block id, and only
starts from one whose block is still canonical.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .chain import ChainStore
from .model import Block
from .stake_state import StakeAccount, StakeBook

CHECKPOINT_EVERY = 256
MAX_CHECKPOINTS = 400


class StateView:
    def __init__(
        self,
        store: ChainStore,
        opening: Callable[[], tuple[int | None, StakeBook]],
        extra: Callable[[Block], list[tuple[str, dict[str, object]]]] | None = None,
    ) -> None:
        """`opening` gives (the first block's parent time, a copy of the state before the first
        block); the time is None until the first block exists. `extra` gives state changes a block
        makes besides its stake transactions (simulator.contract_stakes)."""
        self._store = store
        self._extra = extra or (lambda block: [])
        self._opening = opening
        self._lock = threading.Lock()
        self._latest: tuple[int, str, StakeBook] | None = None  # private, advanced in place
        self._checkpoints: dict[int, tuple[str, StakeBook]] = {}

    def account(self, address: str, number: int) -> StakeAccount | None:
        """A copy of `address`'s state after block `number` (None when that block does not exist)."""
        with self._lock:
            book = self._book_at(number)
            return None if book is None else book.peek(address).clone()

    def network_weights(self, number: int) -> dict[str, int] | None:
        """Every simulated account's share of the network's stake weights after block `number`
        (None when that block does not exist): per resource, the sum of each account's
        floor(stake with delegated-out / 1 TRX), what java-tron's TotalEnergyWeight /
        TotalNetWeight add up (FreezeBalanceV2Actuator adds new - old weight of the account)."""
        with self._lock:
            book = self._book_at(number)
            if book is None:
                return None
            weights = {"BANDWIDTH": 0, "ENERGY": 0}
            for state in book.accounts.values():
                for resource in weights:
                    v2 = state.frozen.get(resource, 0) + state.delegated_out.get(resource, 0)
                    legacy = state.legacy.get(resource)
                    weights[resource] += v2 // 1_000_000 + (legacy.amount // 1_000_000 if legacy else 0)
            return weights

    def known(self, address: str, number: int | None) -> bool:
        """Whether the account exists on chain after block `number`: it had stake before the
        first block or took part in a stake transaction (the only accounts simulated)."""
        if number is None:
            return False
        with self._lock:
            book = self._book_at(number)
            return book is not None and address in book.accounts

    def _canonical(self, number: int, block_id: str) -> bool:
        block = self._store.block(number)
        return block is not None and block.block_id == block_id

    def _book_at(self, number: int) -> StakeBook | None:
        target = self._store.block(number)
        first_parent_ms, opening = self._opening()
        if first_parent_ms is None:
            return None
        if number == self._store.start_block - 1:
            return opening
        if target is None:
            return None
        start, book, advancing_latest = self._store.start_block - 1, opening, False
        latest = self._latest
        if latest is not None and latest[0] <= number and self._canonical(latest[0], latest[1]):
            start, book, advancing_latest = latest[0], latest[2], True
        for at in sorted(self._checkpoints, reverse=True):
            if start < at <= number and self._canonical(at, self._checkpoints[at][0]):
                start, book, advancing_latest = at, self._checkpoints[at][1].clone(), False
                break
        if start == number:
            return book
        previous = self._store.block(start)
        parent_ms = previous.timestamp if previous is not None else first_parent_ms
        for block in self._store.blocks(start + 1, number + 1):
            _apply_block(book, block, parent_ms)
            for contract_type, value in self._extra(block):
                book.execute(contract_type, value, parent_ms)
            parent_ms = block.timestamp
            if block.number % CHECKPOINT_EVERY == 0 and block.number not in self._checkpoints:
                self._checkpoints[block.number] = (block.block_id, book.clone())
                while len(self._checkpoints) > MAX_CHECKPOINTS:
                    del self._checkpoints[min(self._checkpoints)]
        if advancing_latest or latest is None or number >= latest[0]:
            self._latest = (number, target.block_id, book if advancing_latest else book.clone())
        return book


def _apply_block(book: StakeBook, block: Block, parent_ms: int) -> None:
    for tx in block.txs:
        if tx.success and tx.rows:
            # A stored stake transaction that does not validate would be a generator bug; the
            # exception (Rejected) makes it loud instead of serving a silently different state.
            book.execute(tx.contract_type, tx.value, parent_ms)
