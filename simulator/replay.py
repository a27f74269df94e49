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
from .ops import BLOCK_MS, DEFAULT_LOCK_PERIOD, MIN_STAKE, Effects
from .stake_state import MAX_UNFREEZE_LOTS, StakeAccount
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


def reexecute(tx: Tx, account: StakeAccount, now_ms: int, delay_ms: int) -> Tx | None:
    """`tx` re-executed on `account` at block time `now_ms`; None if it no longer validates.

    A transaction that failed (REVERT) changes no state and fails again the same way."""
    if not tx.success or not tx.rows:
        return tx
    effects = _apply(tx.contract_type, tx.value, account, now_ms, delay_ms)
    if effects is None:
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


def _apply(kind: str, value: dict[str, object], account: StakeAccount, now_ms: int, delay_ms: int) -> Effects | None:
    """The actuator rules of stake_state, checked then applied; None when validation fails."""
    resource = str(value.get("resource", "BANDWIDTH"))
    amount = int(str(value.get("frozen_balance") or value.get("unfreeze_balance") or value.get("balance") or 0))
    if kind == "FreezeBalanceV2Contract":
        account.freeze(resource, amount)
        return Effects()
    if kind == "FreezeBalanceContract":
        account.legacy_freeze(resource, amount)
        return Effects()
    if kind == "UnfreezeBalanceContract":
        if not account.legacy_frozen.get(resource):
            return None
        return Effects(unfreeze_amount=account.legacy_unfreeze(resource))
    if kind == "UnfreezeBalanceV2Contract":
        if not 0 < amount <= account.available(resource) or account.pending_lots(now_ms) >= MAX_UNFREEZE_LOTS:
            return None
        return Effects(withdraw_expire_amount=account.unfreeze(resource, amount, now_ms, delay_ms))
    if kind == "WithdrawExpireUnfreezeContract":
        if account.matured(now_ms) <= 0:
            return None
        return Effects(withdraw_expire_amount=account.withdraw(now_ms))
    if kind == "CancelAllUnfreezeV2Contract":
        if not account.lots:
            return None
        cancelled, withdrawn = account.cancel_all(now_ms)
        return Effects(withdraw_expire_amount=withdrawn, cancel_unfreeze=tuple(cancelled.items()))
    receiver = str(value.get("receiver_address", ""))
    if kind == "DelegateResourceContract":
        if not MIN_STAKE <= amount <= account.available(resource):
            return None
        lock_expire = None
        if value.get("lock"):
            period_ms = int(str(value.get("lock_period") or DEFAULT_LOCK_PERIOD)) * BLOCK_MS
            if period_ms < account.lock_remaining_ms(receiver, resource, now_ms):
                return None  # a new lock may not end before the current one
            lock_expire = now_ms + period_ms
        account.delegate(receiver, resource, amount, lock_expire)
        return Effects()
    if kind == "UnDelegateResourceContract":
        if not 0 < amount <= account.undelegatable(receiver, resource, now_ms):
            return None
        account.undelegate(receiver, resource, amount, now_ms)
        return Effects()
    return None
