"""Chain reorganisations: replace the newest d blocks with a new branch of d+1 blocks.

This is what a TRON full node sees on a short fork (DPoS with longest-chain fork choice;
maintainers call a switch "a normal occurrence" in tronprotocol/java-tron#3965): another producer's branch
turns out longer, the node switches to it, and the transactions of the abandoned blocks go back
to the mempool. The new branch therefore re-packs most of them (same txID, same raw_data) in
other blocks, re-executed against the rolled-back state at the new block time, and loses some:

- the last replaced block's transactions each with probability 0.5, standing for those that had
  not yet reached the producers of the winning branch;
- any transaction whose ref_block (TAPOS) points at a replaced block, whose expiration has
  passed, or that no longer validates against the rolled-back state.

A fork never reaches the solidified head: depth < solid lag. The depth is also limited by the
generator's undo journal, which covers the newest solid_lag + 2 blocks.
"""

from __future__ import annotations

import random

from .chain import ChainStore
from .generator import ChainGenerator
from .model import Block, Tx

BLOCK_MS = 3000
REF_WINDOW = 20  # ref_block_* of fresh transactions point into the newest 20 blocks
DROP_LAST_BLOCK_SHARE = 0.5


class Forker:
    def __init__(self, store: ChainStore, generator: ChainGenerator, solid_lag: int, rng: random.Random) -> None:
        self._store = store
        self._generator = generator
        self._solid_lag = solid_lag
        self._rng = rng

    def max_depth(self) -> int:
        """The deepest fork possible now (0 = none)."""
        head = self._store.head()
        oldest = self._generator.journal.oldest()
        if head is None or oldest is None:
            return 0
        return max(0, min(self._solid_lag - 1, head.number - oldest + 1))

    def fork(self, depth: int, now_ms: int) -> dict[str, object]:
        """Replace the newest `depth` blocks. The caller serialises this with block production."""
        limit = self.max_depth()
        if not 1 <= depth <= limit:
            raise ValueError(f"fork depth must be in 1..{limit} now (depth < solid lag, within the journal)")
        head = self._store.head()
        assert head is not None  # max_depth() > 0 implies a head
        first = head.number - depth + 1
        old = self._store.blocks(first, head.number + 1)
        ancestors = self._store.blocks(first - REF_WINDOW, first)
        self._generator.rollback(first)
        # TAPOS: a transaction is valid only if its ref block is on the chain it is packed into.
        visible = {_ref_key(block) for block in ancestors}
        new: list[Block] = []
        parent = old[0].parent_hash
        previous_ms = ancestors[-1].timestamp if ancestors else old[0].timestamp - BLOCK_MS
        for index in range(depth + 1):
            if index < depth:
                # The winning producer built in the slot after the replaced block's one.
                timestamp = max(previous_ms, old[index].timestamp) + BLOCK_MS
            else:
                timestamp = max(previous_ms + BLOCK_MS, now_ms)
            carried: list[Tx] = []
            if index > 0:
                carried = self._carry(old[index - 1], index == depth, visible, timestamp)
            recent = [*ancestors, *new][-REF_WINDOW:]
            block = self._generator.build_block(first + index, timestamp, parent, recent, carried, witness_shift=1)
            new.append(block)
            visible.add(_ref_key(block))
            parent, previous_ms = block.block_id, timestamp
        self._store.replace_from(first, new)
        old_ids = {tx.tx_id for block in old for tx in block.txs}
        kept = sum(1 for block in new for tx in block.txs if tx.tx_id in old_ids)
        return {
            "depth": depth,
            "replaced": [block.number for block in old],
            "head": new[-1].number,
            "reincluded": kept,
            "dropped": len(old_ids) - kept,
        }

    def _carry(self, block: Block, is_last: bool, visible: set[tuple[str, str]], timestamp: int) -> list[Tx]:
        """The transactions of replaced `block` offered to the new branch (still to be re-executed)."""
        carried = []
        for tx in block.txs:
            if is_last and self._rng.random() < DROP_LAST_BLOCK_SHARE:
                continue
            if (tx.ref_block_bytes, tx.ref_block_hash) not in visible or tx.expiration <= timestamp:
                continue
            carried.append(tx)
        return carried


def _ref_key(block: Block) -> tuple[str, str]:
    """ref_block_bytes and ref_block_hash as a transaction referencing `block` carries them."""
    return f"{block.number & 0xFFFF:04x}", block.block_id[16:32]
