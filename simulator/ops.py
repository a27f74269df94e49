"""Choosing the next stake operation for an account: always one the chain would accept.

A plan carries the contract value to put in the transaction and an `apply` callback that changes
the account state and returns the TransactionInfo amounts. The generator calls `apply` only for
transactions that succeed, so a failed (REVERT) transaction leaves the state untouched.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import contract_value
from .stake_state import DELEGATABLE, MAX_UNFREEZE_LOTS, StakeAccount

SUN = 1_000_000
MIN_STAKE = SUN  # FreezeV2 and Delegate need at least 1 TRX
BLOCK_MS = 3000
DEFAULT_LOCK_PERIOD = 86400  # blocks: lock=true without lock_period means 3 days
# lock_period values seen in the wild (blocks). The short ones exist so that locks expire within
# a test run and the "undelegate an expired lock" path is exercised.
LOCK_PERIODS = (28800, 28800, 86400, 201600, 1200, 100)
FREEZE_RESOURCES = (("BANDWIDTH", 42), ("ENERGY", 53), ("TRON_POWER", 5))


@dataclass(slots=True)
class Effects:
    """What a successful stake transaction reports in its TransactionInfo."""

    unfreeze_amount: int = 0
    withdraw_expire_amount: int = 0
    cancel_unfreeze: tuple[tuple[str, int], ...] | None = None


@dataclass(slots=True)
class OpPlan:
    contract_type: str
    value: dict[str, object]
    apply: Callable[[], Effects]


class StakePlanner:
    def __init__(self, rng: random.Random, unfreeze_delay_ms: int) -> None:
        self._rng = rng
        self._delay_ms = unfreeze_delay_ms

    # -- amounts -------------------------------------------------------------------------------

    def fresh_amount(self) -> int:
        """A new stake: mostly 1..500k TRX, sometimes with a sub-TRX part, rarely ~10^15 sun
        so that consumers meet integers beyond 2^53 once sums are taken."""
        rng = self._rng
        if rng.random() < 0.01:
            return rng.choice((10**15, rng.randint(10**14, 10**15)))
        sun = int(10 ** rng.uniform(0, 5.7)) * SUN
        if rng.random() < 0.3:
            sun += rng.randint(1, SUN - 1)
        return sun

    def part_of(self, available: int, minimum: int = MIN_STAKE) -> int:
        """A valid amount in [minimum, available] (or all of it, if that is below minimum)."""
        rng = self._rng
        if available <= minimum:
            return available
        roll = rng.random()
        if roll < 0.3:
            return available
        if roll < 0.5:
            return max(minimum, available // 2)
        amount = rng.randint(minimum, available)
        if rng.random() < 0.7:
            amount = max(minimum, amount // SUN * SUN)  # people mostly type whole TRX
        return amount

    def _weighted(self, options: Sequence[tuple[str, int]]) -> str:
        names = [name for name, _ in options]
        return self._rng.choices(names, weights=[weight for _, weight in options])[0]

    # -- plans ---------------------------------------------------------------------------------

    def plan_own(self, account: StakeAccount, now_ms: int, receivers: Sequence[str]) -> OpPlan:
        """Any stake operation owned by `account`; freeze is always possible, so this never fails."""
        options: list[tuple[str, int]] = [("freeze", 22), ("legacy_freeze", 1)]
        if account.pending_lots(now_ms) < MAX_UNFREEZE_LOTS and any(account.available(r) > 0 for r in account.frozen):
            options.append(("unfreeze", 14))
        if any(account.available(r) >= MIN_STAKE for r in DELEGATABLE):
            options.append(("delegate", 24))
        if account.delegations:
            options.append(("undelegate", 18))
        if account.matured(now_ms) > 0:
            options.append(("withdraw", 8))
        if account.lots:
            # Made likelier when all 32 slots are taken, which is how real users get unstuck.
            full = account.pending_lots(now_ms) >= MAX_UNFREEZE_LOTS
            options.append(("cancel", 12 if full else 3))
        if any(account.legacy_frozen.values()):
            options.append(("legacy_unfreeze", 2))
        choice = self._weighted(options)
        if choice == "freeze":
            return self.freeze(account)
        if choice == "legacy_freeze":
            return self.legacy_freeze(account)
        if choice == "unfreeze":
            return self.unfreeze(account, now_ms)
        if choice == "delegate":
            return self.delegate(account, self._rng.choice(receivers), now_ms)
        if choice == "undelegate":
            plan = self.undelegate(account, None, now_ms)
            # All delegations may still be locked; then stake more instead.
            return plan if plan is not None else self.freeze(account)
        if choice == "withdraw":
            return self.withdraw(account, now_ms)
        if choice == "cancel":
            return self.cancel_all(account, now_ms)
        return self.legacy_unfreeze(account)

    def plan_inbound(self, delegator: StakeAccount, receiver: str, now_ms: int) -> OpPlan | None:
        """A delegate/undelegate from `delegator` to `receiver`, or None if neither is possible."""
        if self._rng.random() < 0.4:
            plan = self.undelegate(delegator, receiver, now_ms)
            if plan is not None:
                return plan
        if any(delegator.available(r) >= MIN_STAKE for r in DELEGATABLE):
            return self.delegate(delegator, receiver, now_ms)
        return self.undelegate(delegator, receiver, now_ms)

    def freeze(self, account: StakeAccount) -> OpPlan:
        resource = self._weighted(FREEZE_RESOURCES)
        amount = self.fresh_amount()
        value = contract_value(
            "FreezeBalanceV2Contract", owner_address=account.address, frozen_balance=amount, resource=resource
        )

        def apply() -> Effects:
            account.freeze(resource, amount)
            return Effects()

        return OpPlan("FreezeBalanceV2Contract", value, apply)

    def legacy_freeze(self, account: StakeAccount) -> OpPlan:
        resource = self._rng.choice(DELEGATABLE)
        amount = self.fresh_amount()
        value = contract_value(
            "FreezeBalanceContract",
            owner_address=account.address,
            frozen_balance=amount,
            frozen_duration=3,  # V1 only allowed 3 days
            resource=resource,
        )

        def apply() -> Effects:
            account.legacy_freeze(resource, amount)
            return Effects()

        return OpPlan("FreezeBalanceContract", value, apply)

    def legacy_unfreeze(self, account: StakeAccount) -> OpPlan:
        resource = self._rng.choice(sorted(r for r, amount in account.legacy_frozen.items() if amount))
        value = contract_value("UnfreezeBalanceContract", owner_address=account.address, resource=resource)

        def apply() -> Effects:
            return Effects(unfreeze_amount=account.legacy_unfreeze(resource))

        return OpPlan("UnfreezeBalanceContract", value, apply)

    def unfreeze(self, account: StakeAccount, now_ms: int) -> OpPlan:
        resource = self._rng.choice(sorted(r for r in account.frozen if account.available(r) > 0))
        amount = self.part_of(account.available(resource))
        value = contract_value(
            "UnfreezeBalanceV2Contract", owner_address=account.address, unfreeze_balance=amount, resource=resource
        )

        def apply() -> Effects:
            return Effects(withdraw_expire_amount=account.unfreeze(resource, amount, now_ms, self._delay_ms))

        return OpPlan("UnfreezeBalanceV2Contract", value, apply)

    def withdraw(self, account: StakeAccount, now_ms: int) -> OpPlan:
        value = contract_value("WithdrawExpireUnfreezeContract", owner_address=account.address)

        def apply() -> Effects:
            return Effects(withdraw_expire_amount=account.withdraw(now_ms))

        return OpPlan("WithdrawExpireUnfreezeContract", value, apply)

    def cancel_all(self, account: StakeAccount, now_ms: int) -> OpPlan:
        value = contract_value("CancelAllUnfreezeV2Contract", owner_address=account.address)

        def apply() -> Effects:
            cancelled, withdrawn = account.cancel_all(now_ms)
            return Effects(withdraw_expire_amount=withdrawn, cancel_unfreeze=tuple(cancelled.items()))

        return OpPlan("CancelAllUnfreezeV2Contract", value, apply)

    def delegate(self, account: StakeAccount, receiver: str, now_ms: int) -> OpPlan:
        rng = self._rng
        resource = rng.choice([r for r in DELEGATABLE if account.available(r) >= MIN_STAKE])
        amount = self.part_of(account.available(resource))
        roll = rng.random()
        lock, lock_period = False, 0
        if roll < 0.5:
            pass  # unlocked: rental platforms and self-delegation alike
        else:
            lock = True
            # lock=true alone (15% of all) means the 86400-block default, rendered without the key.
            lock_period = rng.choice(LOCK_PERIODS) if roll < 0.85 else 0
            # A new lock to the same receiver may not end before the current one does.
            remaining = math.ceil(account.lock_remaining_ms(receiver, resource, now_ms) / BLOCK_MS)
            if (lock_period or DEFAULT_LOCK_PERIOD) < remaining:
                lock_period = remaining
        value = contract_value(
            "DelegateResourceContract",
            owner_address=account.address,
            resource=resource,
            balance=amount,
            receiver_address=receiver,
            lock=lock,
            lock_period=lock_period,
        )
        lock_expire = now_ms + (lock_period or DEFAULT_LOCK_PERIOD) * BLOCK_MS if lock else None

        def apply() -> Effects:
            account.delegate(receiver, resource, amount, lock_expire)
            return Effects()

        return OpPlan("DelegateResourceContract", value, apply)

    def undelegate(self, account: StakeAccount, receiver: str | None, now_ms: int) -> OpPlan | None:
        picked = self._sample_undelegatable(account, now_ms) if receiver is None else None
        if picked is None:
            candidates = account.undelegatable_pairs(now_ms, receiver)
            if not candidates:
                return None
            picked = self._rng.choice(candidates)
        to, resource = picked
        amount = self.part_of(account.undelegatable(to, resource, now_ms), minimum=1)
        value = contract_value(
            "UnDelegateResourceContract",
            owner_address=account.address,
            resource=resource,
            balance=amount,
            receiver_address=to,
        )

        def apply() -> Effects:
            account.undelegate(to, resource, amount, now_ms)
            return Effects()

        return OpPlan("UnDelegateResourceContract", value, apply)

    def _sample_undelegatable(self, account: StakeAccount, now_ms: int) -> tuple[str, str] | None:
        """A few random tries before a full scan: busy accounts hold hundreds of delegation
        records, and scanning them all for every undelegate dominated history generation."""
        keys = list(account.delegations)
        for _ in range(8):
            to, resource, _ = self._rng.choice(keys)
            if account.undelegatable(to, resource, now_ms) > 0:
                return to, resource
        return None
