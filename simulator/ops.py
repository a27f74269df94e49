"""Choosing the next stake operation for an account: always one the chain would accept.

A plan is a contract type and value chosen from the account's current state (simulator.stake_state);
the generator executes it with StakeBook.execute, which validates it again by java-tron's rules and
applies it, so a plan that would be rejected is never packed (system contracts never fail in a
block: framework/src/main/java/org/tron/common/runtime/RuntimeImpl.java rejects them before).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .model import contract_value
from .stake_state import BLOCK_MS, DEFAULT_LOCK_PERIOD, DELEGATABLE, MAX_UNFREEZE_LOTS, TRX, StakeAccount

SUN = TRX
MIN_STAKE = TRX  # FreezeV2 and Delegate need at least 1 TRX
# lock_period values (blocks). Mainnet ones, plus short ones so that locks expire (and are merged
# by the next delegate/undelegate) within a test-length run.
LOCK_PERIODS = (28800, 86400, 201600, 1200, 100, 100, 20, 20, 5, 5)
FREEZE_RESOURCES = (("BANDWIDTH", 42), ("ENERGY", 53), ("TRON_POWER", 5))


@dataclass(slots=True)
class OpPlan:
    contract_type: str
    value: dict[str, object]


class StakePlanner:
    def __init__(self, rng: random.Random, lock_periods: Sequence[int] = LOCK_PERIODS) -> None:
        self._rng = rng
        self._lock_periods = tuple(lock_periods)

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
        """Any stake operation owned by `account`; freeze is always possible, so this never fails.
        `now_ms` is the parent block's time, the actuators' "now"."""
        options: list[tuple[str, int]] = [("freeze", 22)]
        if account.pending_lots(now_ms) < MAX_UNFREEZE_LOTS and any(v > 0 for v in account.frozen.values()):
            options.append(("unfreeze", 14))
        if any(account.available(r) >= MIN_STAKE for r in DELEGATABLE):
            options.append(("delegate", 24))
        if account.records:
            options.append(("undelegate", 18))
        if account.matured(now_ms) > 0:
            options.append(("withdraw", 8))
        if account.lots:
            # Made likelier when all 32 slots are taken, which is how real users get unstuck.
            full = account.pending_lots(now_ms) >= MAX_UNFREEZE_LOTS
            options.append(("cancel", 12 if full else 3))
        if account.v1_unfreezable(now_ms):
            options.append(("legacy_unfreeze", 4))  # V1 stake only exists in an opening state
        choice = self._weighted(options)
        if choice == "unfreeze":
            return self.unfreeze(account)
        if choice == "delegate":
            others = [r for r in receivers if r != account.address]
            if others:
                return self.delegate(account, self._rng.choice(others), now_ms)
        if choice == "undelegate":
            plan = self.undelegate(account, None, now_ms)
            if plan is not None:  # all delegations may still be locked; then stake more instead
                return plan
        if choice == "withdraw":
            return OpPlan(
                "WithdrawExpireUnfreezeContract",
                contract_value("WithdrawExpireUnfreezeContract", owner_address=account.address),
            )
        if choice == "cancel":
            return OpPlan(
                "CancelAllUnfreezeV2Contract",
                contract_value("CancelAllUnfreezeV2Contract", owner_address=account.address),
            )
        if choice == "legacy_unfreeze":
            resource = self._rng.choice(sorted(account.v1_unfreezable(now_ms)))
            value = contract_value("UnfreezeBalanceContract", owner_address=account.address, resource=resource)
            return OpPlan("UnfreezeBalanceContract", value)
        return self.freeze(account)

    def plan_inbound(self, delegator: StakeAccount, receiver: str, now_ms: int) -> OpPlan | None:
        """A delegate/undelegate from `delegator` to `receiver`, or None if neither is possible."""
        if delegator.address == receiver:
            return None
        if self._rng.random() < 0.4:
            plan = self.undelegate(delegator, receiver, now_ms)
            if plan is not None:
                return plan
        if any(delegator.available(r) >= MIN_STAKE for r in DELEGATABLE):
            return self.delegate(delegator, receiver, now_ms)
        return self.undelegate(delegator, receiver, now_ms)

    def freeze(self, account: StakeAccount) -> OpPlan:
        resource = self._weighted(FREEZE_RESOURCES)
        value = contract_value(
            "FreezeBalanceV2Contract",
            owner_address=account.address,
            frozen_balance=self.fresh_amount(),
            resource=resource,
        )
        return OpPlan("FreezeBalanceV2Contract", value)

    def unfreeze(self, account: StakeAccount) -> OpPlan:
        resource = self._rng.choice(sorted(r for r, v in account.frozen.items() if v > 0))
        amount = self.part_of(account.available(resource), minimum=1)
        value = contract_value(
            "UnfreezeBalanceV2Contract", owner_address=account.address, unfreeze_balance=amount, resource=resource
        )
        return OpPlan("UnfreezeBalanceV2Contract", value)

    def delegate(self, account: StakeAccount, receiver: str, now_ms: int) -> OpPlan:
        rng = self._rng
        resource = rng.choice([r for r in DELEGATABLE if account.available(r) >= MIN_STAKE])
        amount = self.part_of(account.available(resource))
        roll = rng.random()
        lock, lock_period = False, 0
        if roll >= 0.45:
            lock = True
            # lock=true alone (15% of all) means the 86400-block default, rendered without the key.
            lock_period = rng.choice(self._lock_periods) if roll < 0.85 else 0
            # A new lock may not end before the remaining one (validRemainTime).
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
        return OpPlan("DelegateResourceContract", value)

    def undelegate(self, account: StakeAccount, receiver: str | None, now_ms: int) -> OpPlan | None:
        pairs = [
            (to, resource)
            for to in ([receiver] if receiver is not None else self._sample_receivers(account))
            for resource in DELEGATABLE
            if account.undelegatable(to, resource, now_ms) > 0
        ]
        if not pairs:
            return None
        to, resource = self._rng.choice(pairs)
        amount = self.part_of(account.undelegatable(to, resource, now_ms), minimum=1)
        value = contract_value(
            "UnDelegateResourceContract",
            owner_address=account.address,
            resource=resource,
            balance=amount,
            receiver_address=to,
        )
        return OpPlan("UnDelegateResourceContract", value)

    def _sample_receivers(self, account: StakeAccount) -> list[str]:
        """A few random receivers: busy accounts hold hundreds of records, and scanning them all
        for every undelegate dominated history generation."""
        receivers = account.receivers()
        if len(receivers) <= 8:
            return receivers
        return self._rng.sample(receivers, 8)
