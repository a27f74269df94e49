"""Per-account Stake 2.0 state, so every generated operation is one a real chain would accept.

Rules follow java-tron's actuators (actuator/src/main/java/org/tron/core/actuator/*V2Actuator.java):
unfreeze only what is frozen and not
delegated out, at most 32 pending unfreeze lots, lots mature at block time + the unfreeze delay,
UnfreezeBalanceV2 and CancelAllUnfreezeV2 withdraw matured lots as a side effect, undelegate only
unlocked (or lock-expired) delegated amounts, and locked and unlocked delegations are separate
records. Time is always chain (block) time in ms, never wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_UNFREEZE_LOTS = 32  # UNFREEZE_MAX_TIMES
DELEGATABLE = ("BANDWIDTH", "ENERGY")  # TRON_POWER cannot be delegated
# CancelAllUnfreezeV2's map prints in this order in the privatenet fixture (java HashMap order).
CANCEL_KEY_ORDER = ("ENERGY", "TRON_POWER", "BANDWIDTH")


# Lots and delegation records are immutable and replaced on change, so `clone` (the fork journal's
# snapshot, taken before every state change) needs only shallow copies: busy accounts hold hundreds
# of delegation records, and copying each one made live production ten times slower.
@dataclass(slots=True, frozen=True)
class UnfreezeLot:
    resource: str
    amount: int
    expire_ms: int


@dataclass(slots=True, frozen=True)
class Delegation:
    amount: int = 0
    lock_expire_ms: int = 0  # only meaningful for the locked record


@dataclass(slots=True)
class StakeAccount:
    address: str  # hex
    frozen: dict[str, int] = field(default_factory=dict)  # V2 stake, including delegated-out part
    delegated_out: dict[str, int] = field(default_factory=dict)
    lots: list[UnfreezeLot] = field(default_factory=list)
    # (receiver hex, resource, locked) -> record. Locked and unlocked are kept apart, as on chain.
    delegations: dict[tuple[str, str, bool], Delegation] = field(default_factory=dict)
    legacy_frozen: dict[str, int] = field(default_factory=dict)  # V1 stake

    def clone(self) -> StakeAccount:
        """An independent copy (the fork journal's snapshot)."""
        return StakeAccount(
            self.address,
            dict(self.frozen),
            dict(self.delegated_out),
            list(self.lots),
            dict(self.delegations),
            dict(self.legacy_frozen),
        )

    # -- queries -------------------------------------------------------------------------------

    def available(self, resource: str) -> int:
        """Frozen and not delegated out: what may be unfrozen or delegated."""
        return self.frozen.get(resource, 0) - self.delegated_out.get(resource, 0)

    def matured(self, now_ms: int) -> int:
        return sum(lot.amount for lot in self.lots if lot.expire_ms <= now_ms)

    def pending_lots(self, now_ms: int) -> int:
        # java-tron counts only unexpired lots against the limit; expired ones are withdrawn first.
        return sum(1 for lot in self.lots if lot.expire_ms > now_ms)

    def undelegatable(self, receiver: str, resource: str, now_ms: int) -> int:
        total = self.delegations.get((receiver, resource, False), Delegation()).amount
        locked = self.delegations.get((receiver, resource, True))
        if locked is not None and locked.lock_expire_ms <= now_ms:
            total += locked.amount  # an expired lock is released lazily, but it is released
        return total

    def lock_remaining_ms(self, receiver: str, resource: str, now_ms: int) -> int:
        locked = self.delegations.get((receiver, resource, True))
        return max(0, locked.lock_expire_ms - now_ms) if locked else 0

    def undelegatable_pairs(self, now_ms: int, receiver: str | None = None) -> list[tuple[str, str]]:
        """(receiver, resource) pairs with something undelegatable now, in a deterministic order
        (dict insertion order; a set would follow per-process string hashing)."""
        pairs = (
            (to, resource)
            for (to, resource, locked), record in self.delegations.items()
            if (receiver is None or to == receiver) and (not locked or record.lock_expire_ms <= now_ms)
        )
        return list(dict.fromkeys(pairs))

    # -- state changes (only called for transactions that succeed) ------------------------------

    def freeze(self, resource: str, amount: int) -> None:
        self.frozen[resource] = self.frozen.get(resource, 0) + amount

    def unfreeze(self, resource: str, amount: int, now_ms: int, delay_ms: int) -> int:
        """Returns the auto-withdrawn matured amount (TransactionInfo withdraw_expire_amount)."""
        withdrawn = self.withdraw(now_ms)
        self.frozen[resource] -= amount
        self.lots.append(UnfreezeLot(resource, amount, now_ms + delay_ms))
        return withdrawn

    def withdraw(self, now_ms: int) -> int:
        withdrawn = self.matured(now_ms)
        self.lots = [lot for lot in self.lots if lot.expire_ms > now_ms]
        return withdrawn

    def cancel_all(self, now_ms: int) -> tuple[dict[str, int], int]:
        """Unmatured lots go back to frozen; matured ones are withdrawn.
        Returns (re-staked amount per resource, all three keys; withdrawn amount)."""
        cancelled = dict.fromkeys(CANCEL_KEY_ORDER, 0)
        withdrawn = 0
        for lot in self.lots:
            if lot.expire_ms <= now_ms:
                withdrawn += lot.amount
            else:
                cancelled[lot.resource] += lot.amount
                self.freeze(lot.resource, lot.amount)
        self.lots = []
        return cancelled, withdrawn

    def delegate(self, receiver: str, resource: str, amount: int, lock_expire_ms: int | None) -> None:
        """lock_expire_ms None = an unlocked delegation."""
        locked = lock_expire_ms is not None
        key = (receiver, resource, locked)
        record = self.delegations.get(key, Delegation())
        expire = max(record.lock_expire_ms, lock_expire_ms) if lock_expire_ms is not None else record.lock_expire_ms
        self.delegations[key] = Delegation(record.amount + amount, expire)
        self.delegated_out[resource] = self.delegated_out.get(resource, 0) + amount

    def undelegate(self, receiver: str, resource: str, amount: int, now_ms: int) -> None:
        """Takes from the unlocked record first, then from an expired locked one."""
        remaining = amount
        for locked in (False, True):
            key = (receiver, resource, locked)
            record = self.delegations.get(key)
            if not remaining:
                break
            if record is None or (locked and record.lock_expire_ms > now_ms):
                continue
            taken = min(record.amount, remaining)
            remaining -= taken
            if record.amount == taken:
                del self.delegations[key]
            else:
                self.delegations[key] = Delegation(record.amount - taken, record.lock_expire_ms)
        if remaining:
            raise ValueError("undelegate exceeds the undelegatable amount")
        self.delegated_out[resource] -= amount

    def legacy_freeze(self, resource: str, amount: int) -> None:
        self.legacy_frozen[resource] = self.legacy_frozen.get(resource, 0) + amount

    def legacy_unfreeze(self, resource: str) -> int:
        """V1 unfreeze releases the whole V1 stake of that resource (TransactionInfo unfreeze_amount)."""
        return self.legacy_frozen.pop(resource, 0)
