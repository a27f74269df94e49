"""What forks need from the stake state: an undo journal, and re-execution of carried transactions.

The journal saves a copy of an account the first time a block changes it, so rolling back the
last d blocks restores exactly the state their parent left, at the cost of copying only the few
accounts each block touches (a full deep copy per block made history generation much slower).

`reexecute` applies a transaction from a replaced block to the rolled-back state, as java-tron
re-validates mempool transactions when it packs them into the new branch: the same txID and
raw_data, but the actuator checks run again at the new block time, and the TransactionInfo amounts
(withdrawn lots, for instance) are computed afresh. A transaction that no longer validates is not
packed at all, which is how it ends up orphaned.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from .model import Tx
from .stake_state import Rejected, StakeAccount, StakeBook
from .truth import decompose


class StateJournal:
    """Per-block undo records for the newest `keep` blocks, contiguous up to the newest one."""

    def __init__(self, accounts: dict[str, StakeAccount], keep: int) -> None:
        self._accounts = accounts
        self._keep = max(keep, 1)
        # (block number, {address: the account as it was before that block, None = absent})
        self._entries: deque[tuple[int, dict[str, StakeAccount | None]]] = deque()
        self.enabled = True

    def begin(self, number: int) -> None:
        if not self.enabled:
            # A gap would make older records unusable, so a disabled stretch forgets them all.
            self._entries.clear()
            return
        if self._entries and self._entries[-1][0] != number - 1:
            self._entries.clear()  # not contiguous (a test replaced blocks behind our back)
        self._entries.append((number, {}))
        while len(self._entries) > self._keep:
            self._entries.popleft()

    def touch(self, address: str) -> None:
        """Call before the current block changes `address`."""
        if not self.enabled or not self._entries:
            return
        saved = self._entries[-1][1]
        if address not in saved:
            account = self._accounts.get(address)
            saved[address] = account.clone() if account is not None else None

    def oldest(self) -> int | None:
        """The lowest block number the state can be rolled back to (the state before it)."""
        return self._entries[0][0] if self._entries else None

    def rollback(self, number: int) -> None:
        """Restore the state as it was before block `number`."""
        oldest = self.oldest()
        if oldest is None or number < oldest:
            raise ValueError(f"cannot roll the stake state back to block {number}")
        while self._entries and self._entries[-1][0] >= number:
            _, saved = self._entries.pop()
            for address, account in saved.items():
                if account is None:
                    self._accounts.pop(address, None)
                else:
                    self._accounts[address] = account


def reexecute(tx: Tx, book: StakeBook, now_ms: int) -> Tx | None:
    """`tx` re-executed on `book` at chain time `now_ms` (the new parent block's time); None if
    it no longer validates. A transaction that failed (REVERT) changes no state and fails again."""
    if not tx.success or not tx.rows:
        return tx
    try:
        effects = book.execute(tx.contract_type, tx.value, now_ms)
    except Rejected:
        return None
    info = dataclasses.replace(
        tx.info,
        unfreeze_amount=effects.unfreeze_amount,
        withdraw_expire_amount=effects.withdraw_expire_amount,
        cancel_unfreeze=effects.cancel_unfreeze,
    )
    again = dataclasses.replace(tx, info=info)
    again.rows = decompose(again)
    return again
