"""The simulated node: produces blocks (history at start, then live), pause/resume, truth.

Block timestamps are chain time: ms, multiples of 3000, strictly increasing by >= 3000. History
is back-dated so its last block is about now; a live block gets max(prev + 3000, now rounded
down to 3000). With fast block intervals chain time runs ahead of the wall clock, on purpose:
unfreeze lots mature by chain time, so tests can see withdrawals quickly.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
import time
from collections.abc import Callable

from .addresses import AddressBook
from .chain import ChainStore
from .config import SimConfig
from .contract_stakes import ContractStakes
from .forks import Forker
from .generator import ChainGenerator
from .model import Block
from .opening import build_opening, parse_opening
from .stake_state import StakeAccount, StakeBook
from .state_view import StateView
from .truth import truth_rows

BLOCK_MS = 3000


def slot_floor(ms: int) -> int:
    return ms // BLOCK_MS * BLOCK_MS


class SimNode:
    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.book = AddressBook()
        self.store = ChainStore(config.start_block, config.solid_lag)
        self._clock = clock
        # Forks reach below head by < solid_lag blocks; two more leave room for a fork in progress.
        self._journal_blocks = config.solid_lag + 2
        self._tracked = list(config.tracked_hex)
        opening_spec = parse_opening(config.opening_state)
        delay_ms = config.unfreeze_delay_seconds * 1000

        def opening(now_ms: int) -> dict[str, StakeAccount]:
            return build_opening(opening_spec, now_ms, config.seed, self._tracked, delay_ms)

        self._generator = ChainGenerator(
            seed=config.seed,
            tracked=self._tracked,
            ops_per_block=config.ops_per_block,
            noise_per_block=config.noise_per_block,
            failure_rate=config.failure_rate,
            unfreeze_delay_ms=delay_ms,
            journal_blocks=self._journal_blocks,
            opening=opening,
            lock_periods=config.lock_periods,
            traffic=config.traffic,
            other_stake_per_block=config.other_stake_per_block,
        )
        generator = self._generator
        # Account state for the endpoints, replayed from the stored chain, not the live state.
        # Contract-made stake (TIP-467): in account state only (simulator.contract_stakes).
        self.contract_stakes = ContractStakes()
        self.view = StateView(
            self.store,
            lambda: (generator.first_parent_ms, generator.opening_book.clone()),
            self.contract_stakes.effects,
        )
        # Forks draw from their own RNG, so the fork settings change no other draw: a seed without forks
        # gives the same chain whatever they are.
        self._forker = Forker(self.store, self._generator, config.solid_lag, random.Random(f"sim:{config.seed}:forks"))
        self._fork_rng = random.Random(f"sim:{config.seed}:fork-rate")
        self.fork_rate = config.fork_rate  # changeable at runtime (/sim/fork)
        self.fork_max_depth = config.fork_depth
        self.forks = 0
        # The parent of the first block: a stand-in for the block before the simulated window.
        digest = hashlib.sha256(f"sim:{config.seed}:genesis".encode()).hexdigest()
        self._pre_start_id = f"{config.start_block - 1:016x}" + digest[16:]
        self._produce_lock = threading.Lock()  # producer thread and /sim/produce take turns
        self._paused = threading.Event()
        if config.paused:
            self._paused.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def tracked_base58(self) -> list[str]:
        return [self.book.b58(address) for address in self._tracked]

    # -- production ----------------------------------------------------------------------------

    def generate_history(self, count: int) -> None:
        """`count` blocks at once, back-dated 3 s apart so the last one is about now."""
        if count <= 0:
            return
        last = slot_floor(int(self._clock() * 1000))
        with self._produce_lock:
            head = self.store.head()
            first = last - (count - 1) * BLOCK_MS
            if head is not None:
                first = max(first, head.timestamp + BLOCK_MS)
            for index in range(count):
                # Undo records only matter for the newest blocks; skipping them keeps history fast.
                self._generator.journal.enabled = index >= count - self._journal_blocks
                self._append(first + index * BLOCK_MS)
            self._generator.journal.enabled = True

    def produce(self, count: int = 1) -> Block | None:
        """`count` live blocks now (regardless of pause); returns the new head. With a fork rate,
        a step may be a reorganisation instead, which also moves the head up by one."""
        with self._produce_lock:
            for _ in range(count):
                head = self.store.head()
                now = slot_floor(int(self._clock() * 1000))
                if self.fork_rate > 0 and self._fork_rng.random() < self.fork_rate:
                    depth = min(self.fork_max_depth, self._forker.max_depth())
                    if depth > 0:
                        self._fork(self._fork_rng.randint(1, depth), now)
                        continue
                self._append(now if head is None else max(head.timestamp + BLOCK_MS, now))
            return self.store.head()

    def submit(self, contracts: list[tuple[str, dict[str, object]]], timestamp: int | None = None) -> Block:
        """One block holding exactly `contracts` ((type, value) with hex addresses), even when
        paused. `timestamp` (ms, a multiple of 3000, after the head's) defaults to head + 3 s; a
        later one leaves missed slots, so the parent time ("now") is the head's timestamp either
        way. Raises simulator.stake_state.Rejected (nothing produced) for an invalid contract."""
        with self._produce_lock:
            head = self.store.head()
            if timestamp is None:
                timestamp = head.timestamp + BLOCK_MS if head else slot_floor(int(self._clock() * 1000))
            if timestamp % BLOCK_MS or (head is not None and timestamp <= head.timestamp):
                raise ValueError("timestamp must be a multiple of 3000 ms after the head block's")
            number = head.number + 1 if head else self.store.start_block
            parent = head.block_id if head else self._pre_start_id
            block = self._generator.build_scripted_block(number, timestamp, parent, self.store.recent(20), contracts)
            self.store.append(block)
            return block

    def live_state(self) -> StakeBook:
        """The generator's own state after the head block (tests compare it with `view`)."""
        with self._produce_lock:
            return self._generator.book.clone()

    def fork(self, depth: int) -> dict[str, object]:
        """Reorganise now (even when paused): the newest `depth` blocks replaced by depth + 1."""
        with self._produce_lock:
            return self._fork(depth, slot_floor(int(self._clock() * 1000)))

    def fork_settings(self) -> dict[str, object]:
        return {
            "rate": self.fork_rate,
            "max_depth": self.fork_max_depth,
            "forks": self.forks,
            "possible_depth": self._forker.max_depth(),
        }

    def _fork(self, depth: int, now_ms: int) -> dict[str, object]:
        result = self._forker.fork(depth, now_ms)
        self.forks += 1
        return result

    def _append(self, timestamp: int) -> None:
        head = self.store.head()
        number = head.number + 1 if head else self.store.start_block
        parent = head.block_id if head else self._pre_start_id
        block = self._generator.build_block(number, timestamp, parent, self.store.recent(20))
        self.store.append(block)

    # -- views ---------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        heights = self.store.heights()
        head = self.store.head()
        return {
            "head": heights.head,
            "solid": heights.solid,
            "paused": self.paused,
            "accounts": self.tracked_base58(),
            "block_interval": self.config.block_interval,
            "start_block": self.config.start_block,
            "head_timestamp": head.timestamp if head else None,
            "forks": self.forks,
        }

    def truth(self, accounts_hex: list[str] | None = None) -> dict[str, object]:
        """Ledger operations over blocks <= head for the given accounts (default: all tracked)."""
        heights, entries, orphans = self.store.stake_snapshot()
        wanted = frozenset(accounts_hex if accounts_hex is not None else self._tracked)
        solid = heights.solid if heights.solid is not None else self.config.start_block - 1
        # Canonical rows in chain order, then the ones forks removed for good ("orphaned").
        operations = truth_rows(entries, wanted, solid, self.book)
        operations += truth_rows(orphans, wanted, solid, self.book, orphaned=True)
        return {"head": heights.head, "solid": heights.solid, "operations": operations}


class Producer(threading.Thread):
    """Produces one block per `interval` seconds while the node is not paused."""

    def __init__(self, node: SimNode, interval: float) -> None:
        super().__init__(name="sim-producer", daemon=True)
        self._node = node
        self._interval = interval
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        deadline = time.monotonic() + self._interval
        if self._interval >= BLOCK_MS / 1000:
            # A real producer builds its block at the slot time the block carries: start on a
            # wall-clock slot boundary, so a block appears when its timestamp says (freshness is
            # measured from that timestamp).
            deadline = time.monotonic() + (-time.time()) % self._interval
        while not self._stop_event.wait(max(0.0, deadline - time.monotonic())):
            if not self._node.paused:
                try:
                    self._node.produce(1)
                except Exception as exc:  # noqa: BLE001 - a generator bug must be visible, not stop the chain silently
                    print(f"simulator: block production failed: {exc!r}", file=sys.stderr, flush=True)
            deadline += self._interval
            # After a stall (a long /sim/produce, a suspended laptop) do not burst to catch up.
            deadline = max(deadline, time.monotonic())
