"""Account stake state kept by java-tron's rules, and the one executor that changes it.

Everything here is written from java-tron's actuators and stores (tronprotocol/java-tron):
- actuator/src/main/java/org/tron/core/actuator/{FreezeBalanceV2,UnfreezeBalanceV2,
  WithdrawExpireUnfreeze,CancelAllUnfreezeV2,DelegateResource,UnDelegateResource,
  FreezeBalance,UnfreezeBalance}Actuator.java
- chainbase/src/main/java/org/tron/core/store/DelegatedResourceStore.java (unLockExpireResource)
- chainbase/src/main/java/org/tron/core/store/DelegatedResourceAccountIndexStore.java (delegateV2)

The rules that matter for positions:
- "now" is `getLatestBlockHeaderTimestamp()`, which inside block B is B's PARENT's timestamp:
  framework/.../core/db/Manager.java processBlock runs the transactions before
  updateDynamicProperties(block). Callers pass that parent time as `now_ms`.
- `frozen` is the chain's frozenV2: delegating moves stake out of it into `delegated_out`.
- Per (from, to) there is one unlocked and one locked DelegatedResource record; each holds per
  resource a balance and an expire time. A new lock adds to the balance and REPLACES the expire
  time (DelegatedResourceCapsule.addFrozenBalanceForEnergy(balance, expireTime)); it may not end
  before the remaining lock (validRemainTime: lock_period * 3000 < expire - now is rejected).
- Before every delegate and undelegate (and only then) unLockExpireResource moves each resource
  whose lock expire time is < now into the unlocked record. Undelegate then takes only from the
  unlocked record; its validation counts a lock with expire < now as unlocked.
- Unfreeze lots mature when expire <= now: WithdrawExpireUnfreeze withdraws them, UnfreezeBalanceV2
  withdraws them first (withdraw_expire_amount), CancelAllUnfreezeV2 withdraws them and re-stakes
  the pending ones (cancel_unfreezeV2_amount). At most 32 pending lots (UNFREEZE_MAX_TIMES).
- V1 (FreezeBalanceContract) is closed once Stake 2.0 is on ("freeze v2 is open, old freeze is
  closed" in FreezeBalanceActuator), so V1 stake only exists in an opening state; UnfreezeBalance
  releases the V1 stake of a resource once its expire time <= now ("It's not time to unfreeze").

Validation happens before any change: `execute` either raises Rejected and changes nothing, or
applies the whole transaction. Time is always chain time in ms, never wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_UNFREEZE_LOTS = 32  # UNFREEZE_MAX_TIMES
RESOURCES = ("BANDWIDTH", "ENERGY", "TRON_POWER")
DELEGATABLE = ("BANDWIDTH", "ENERGY")  # TRON_POWER cannot be delegated
# CancelAllUnfreezeV2's map prints in this order in the privatenet fixture (java HashMap order).
CANCEL_KEY_ORDER = ("ENERGY", "TRON_POWER", "BANDWIDTH")
TRX = 1_000_000  # TRX_PRECISION: FreezeV2 and Delegate need at least 1 TRX
BLOCK_MS = 3000
# lock=true with lock_period 0 means DELEGATE_PERIOD / 3000 = 86400 blocks (3 days),
# DelegateResourceActuator.getLockPeriod.
DEFAULT_LOCK_PERIOD = 86_400
STAKE_CONTRACTS = frozenset(
    {
        "FreezeBalanceContract",
        "UnfreezeBalanceContract",
        "FreezeBalanceV2Contract",
        "UnfreezeBalanceV2Contract",
        "WithdrawExpireUnfreezeContract",
        "DelegateResourceContract",
        "UnDelegateResourceContract",
        "CancelAllUnfreezeV2Contract",
    }
)


class Rejected(ValueError):
    """The actuator's validate() failed: the chain would not pack this transaction."""


@dataclass(slots=True)
class Effects:
    """What a successful stake transaction reports in its TransactionInfo."""

    unfreeze_amount: int = 0
    withdraw_expire_amount: int = 0
    cancel_unfreeze: tuple[tuple[str, int], ...] | None = None


# Lots and records are immutable and replaced on change, so `clone` needs only shallow copies.
@dataclass(slots=True, frozen=True)
class UnfreezeLot:
    resource: str
    amount: int
    expire_ms: int


@dataclass(slots=True, frozen=True)
class DelegatedRecord:
    """One java-tron DelegatedResource (protocol Tron.proto): balance and expire time per resource."""

    bandwidth: int = 0
    energy: int = 0
    expire_bandwidth: int = 0
    expire_energy: int = 0

    def balance(self, resource: str) -> int:
        return self.energy if resource == "ENERGY" else self.bandwidth

    def expire(self, resource: str) -> int:
        return self.expire_energy if resource == "ENERGY" else self.expire_bandwidth

    def added(self, resource: str, amount: int, expire_ms: int) -> DelegatedRecord:
        """addFrozenBalanceFor*(amount, expireTime): the balance grows, the expire time is REPLACED."""
        if resource == "ENERGY":
            return DelegatedRecord(self.bandwidth, self.energy + amount, self.expire_bandwidth, expire_ms)
        return DelegatedRecord(self.bandwidth + amount, self.energy, expire_ms, self.expire_energy)

    def is_empty(self) -> bool:
        return self.bandwidth == 0 and self.energy == 0

    def cleared(self, resource: str) -> DelegatedRecord:
        """setFrozenBalanceFor*(0, 0)."""
        if resource == "ENERGY":
            return DelegatedRecord(self.bandwidth, 0, self.expire_bandwidth, 0)
        return DelegatedRecord(0, self.energy, 0, self.expire_energy)


@dataclass(slots=True, frozen=True)
class LegacyFrozen:
    """A V1 stake (Account.frozen / account_resource.frozen_balance_for_energy)."""

    amount: int
    expire_ms: int


@dataclass(slots=True)
class StakeAccount:
    address: str  # hex
    frozen: dict[str, int] = field(default_factory=dict)  # frozenV2: excludes delegated-out stake
    delegated_out: dict[str, int] = field(default_factory=dict)  # delegated_frozenV2_balance_for_*
    acquired: dict[str, int] = field(default_factory=dict)  # acquired_delegated_frozenV2_balance_for_*
    lots: list[UnfreezeLot] = field(default_factory=list)  # unfrozenV2, in creation order
    # (receiver hex, locked) -> record: the DelegatedResource store keys createDbKeyV2(from, to, lock).
    records: dict[tuple[str, bool], DelegatedRecord] = field(default_factory=dict)
    # DelegatedResourceAccountIndex V2: counterpart -> timestamp of the last delegate (list order).
    to_index: dict[str, int] = field(default_factory=dict)
    from_index: dict[str, int] = field(default_factory=dict)
    legacy: dict[str, LegacyFrozen] = field(default_factory=dict)  # V1 own stake per resource

    def clone(self) -> StakeAccount:
        return StakeAccount(
            self.address,
            dict(self.frozen),
            dict(self.delegated_out),
            dict(self.acquired),
            list(self.lots),
            dict(self.records),
            dict(self.to_index),
            dict(self.from_index),
            dict(self.legacy),
        )

    # -- queries -------------------------------------------------------------------------------

    def available(self, resource: str) -> int:
        """frozenV2 of the resource: what may be unfrozen or delegated (usage ignored)."""
        return self.frozen.get(resource, 0)

    def matured(self, now_ms: int) -> int:
        return sum(lot.amount for lot in self.lots if lot.expire_ms <= now_ms)

    def pending_lots(self, now_ms: int) -> int:
        """AccountCapsule.getUnfreezingV2Count(now): lots not yet matured."""
        return sum(1 for lot in self.lots if lot.expire_ms > now_ms)

    def undelegatable(self, receiver: str, resource: str, now_ms: int) -> int:
        """UnDelegateResourceActuator.validate: unlocked balance plus a lock with expire < now."""
        total = self.records.get((receiver, False), DelegatedRecord()).balance(resource)
        locked = self.records.get((receiver, True))
        if locked is not None and locked.expire(resource) < now_ms:
            total += locked.balance(resource)
        return total

    def lock_remaining_ms(self, receiver: str, resource: str, now_ms: int) -> int:
        locked = self.records.get((receiver, True))
        return locked.expire(resource) - now_ms if locked is not None else 0

    def receivers(self) -> list[str]:
        return list(dict.fromkeys(to for to, _ in self.records))

    def v1_unfreezable(self, now_ms: int) -> list[str]:
        return [r for r, stake in self.legacy.items() if stake.amount > 0 and stake.expire_ms <= now_ms]

    def is_empty(self) -> bool:
        return self == StakeAccount(self.address)


class StakeBook:
    """All accounts' stake state and java-tron's actuators over it."""

    def __init__(self, unfreeze_delay_ms: int, accounts: dict[str, StakeAccount] | None = None) -> None:
        self.delay_ms = unfreeze_delay_ms
        self.accounts: dict[str, StakeAccount] = accounts if accounts is not None else {}

    def clone(self) -> StakeBook:
        return StakeBook(self.delay_ms, {a: s.clone() for a, s in self.accounts.items()})

    def account(self, address: str) -> StakeAccount:
        found = self.accounts.get(address)
        if found is None:
            found = self.accounts[address] = StakeAccount(address)
        return found

    def peek(self, address: str) -> StakeAccount:
        """The account without creating it (an empty one if unknown)."""
        return self.accounts.get(address) or StakeAccount(address)

    @staticmethod
    def touched(value: dict[str, object]) -> list[str]:
        """Accounts a transaction may change (for the fork journal)."""
        return [str(value[key]) for key in ("owner_address", "receiver_address") if value.get(key)]

    def execute(self, contract_type: str, value: dict[str, object], now_ms: int) -> Effects:
        """Validate then apply one stake contract at chain time `now_ms` (the parent block's time).
        Raises Rejected (nothing changed) when java-tron's validate() would fail."""
        owner = str(value.get("owner_address", ""))
        resource = str(value.get("resource", "BANDWIDTH"))  # absent = proto3 default
        if contract_type == "FreezeBalanceV2Contract":
            return self._freeze(owner, resource, _int(value, "frozen_balance"))
        if contract_type == "UnfreezeBalanceV2Contract":
            return self._unfreeze(owner, resource, _int(value, "unfreeze_balance"), now_ms)
        if contract_type == "WithdrawExpireUnfreezeContract":
            return self._withdraw(owner, now_ms)
        if contract_type == "CancelAllUnfreezeV2Contract":
            return self._cancel_all(owner, now_ms)
        if contract_type == "DelegateResourceContract":
            return self._delegate(owner, value, resource, now_ms)
        if contract_type == "UnDelegateResourceContract":
            return self._undelegate(owner, str(value.get("receiver_address", "")), resource, value, now_ms)
        if contract_type == "FreezeBalanceContract":
            raise Rejected("freeze v2 is open, old freeze is closed")
        if contract_type == "UnfreezeBalanceContract":
            if value.get("receiver_address"):
                raise Rejected("V1 delegated unfreeze is not simulated")
            return self._unfreeze_v1(owner, resource, now_ms)
        raise Rejected(f"{contract_type} is not a stake contract")

    # -- actuators -----------------------------------------------------------------------------

    def _freeze(self, owner: str, resource: str, amount: int) -> Effects:
        if amount < TRX:
            raise Rejected("frozenBalance must be more than 1TRX")
        if resource not in RESOURCES:
            raise Rejected(f"ResourceCode error: {resource}")
        account = self.account(owner)
        account.frozen[resource] = account.frozen.get(resource, 0) + amount
        return Effects()

    def _unfreeze(self, owner: str, resource: str, amount: int, now_ms: int) -> Effects:
        account = self.peek(owner)
        if amount <= 0:
            raise Rejected("Invalid unfreeze_balance, [unfreeze_balance] must be greater than zero")
        if amount > account.available(resource):
            raise Rejected(f"Invalid unfreeze_balance, [{amount}] is too large")
        if account.pending_lots(now_ms) >= MAX_UNFREEZE_LOTS:
            raise Rejected("Invalid unfreeze operation, unfreezing times is over limit")
        account = self.account(owner)
        withdrawn = _withdraw_matured(account, now_ms)
        account.frozen[resource] -= amount
        # unfreeze_expire_time = latest block header timestamp (the parent's) + the delay.
        account.lots.append(UnfreezeLot(resource, amount, now_ms + self.delay_ms))
        return Effects(withdraw_expire_amount=withdrawn)

    def _withdraw(self, owner: str, now_ms: int) -> Effects:
        account = self.peek(owner)
        if account.matured(now_ms) <= 0:
            raise Rejected("no unFreeze balance to withdraw")
        return Effects(withdraw_expire_amount=_withdraw_matured(self.account(owner), now_ms))

    def _cancel_all(self, owner: str, now_ms: int) -> Effects:
        account = self.peek(owner)
        if not account.lots:
            raise Rejected("No unfreezeV2 list to cancel")
        account = self.account(owner)
        cancelled = dict.fromkeys(CANCEL_KEY_ORDER, 0)
        withdrawn = 0
        for lot in account.lots:
            if lot.expire_ms > now_ms:  # still pending: back into frozenV2
                cancelled[lot.resource] += lot.amount
                account.frozen[lot.resource] = account.frozen.get(lot.resource, 0) + lot.amount
            else:
                withdrawn += lot.amount
        account.lots = []
        return Effects(withdraw_expire_amount=withdrawn, cancel_unfreeze=tuple(cancelled.items()))

    def _delegate(self, owner: str, value: dict[str, object], resource: str, now_ms: int) -> Effects:
        receiver = str(value.get("receiver_address", ""))
        amount = _int(value, "balance")
        lock = bool(value.get("lock", False))
        period = _int(value, "lock_period") or DEFAULT_LOCK_PERIOD
        account = self.peek(owner)
        if amount < TRX:
            raise Rejected("delegateBalance must be more than 1TRX")
        if resource not in DELEGATABLE:
            raise Rejected("ResourceCode error, valid ResourceCode[BANDWIDTH、ENERGY]")
        if account.available(resource) < amount:
            raise Rejected(f"delegateBalance must be less than available Freeze{resource.title()}V2 balance")
        if not receiver or receiver == owner:
            raise Rejected("receiverAddress must not be the same as ownerAddress")
        locked_record = account.records.get((receiver, True))
        if lock and locked_record is not None:
            remaining = locked_record.expire(resource) - now_ms
            if period * BLOCK_MS < remaining:
                raise Rejected(f"The lock period for {resource} this time cannot be less than the remaining time")
        account = self.account(owner)
        _unlock_expired(account, receiver, now_ms)
        expire = now_ms + period * BLOCK_MS if lock else 0
        key = (receiver, lock)
        account.records[key] = account.records.get(key, DelegatedRecord()).added(resource, amount, expire)
        account.frozen[resource] -= amount
        account.delegated_out[resource] = account.delegated_out.get(resource, 0) + amount
        target = self.account(receiver)
        target.acquired[resource] = target.acquired.get(resource, 0) + amount
        # delegateV2(from, to, now): re-putting the key moves the pair to the end of the index.
        account.to_index.pop(receiver, None)
        account.to_index[receiver] = now_ms
        target.from_index.pop(owner, None)
        target.from_index[owner] = now_ms
        return Effects()

    def _undelegate(self, owner: str, receiver: str, resource: str, value: dict[str, object], now_ms: int) -> Effects:
        amount = _int(value, "balance")
        account = self.peek(owner)
        if not any(to == receiver for to, _ in account.records):
            raise Rejected("delegated Resource does not exist")
        if amount <= 0:
            raise Rejected("unDelegateBalance must be more than 0 TRX")
        if resource not in DELEGATABLE:
            raise Rejected("ResourceCode error.valid ResourceCode[BANDWIDTH、Energy]")
        if account.undelegatable(receiver, resource, now_ms) < amount:
            raise Rejected(f"insufficient delegatedFrozenBalance({resource}), request={amount}")
        account = self.account(owner)
        target = self.account(receiver)
        # A receiver holding less than the amount (a suicided contract) is set to 0, as java-tron does.
        target.acquired[resource] = max(0, target.acquired.get(resource, 0) - amount)
        _unlock_expired(account, receiver, now_ms)
        unlocked = account.records[(receiver, False)].added(resource, -amount, 0)
        account.delegated_out[resource] -= amount
        account.frozen[resource] = account.frozen.get(resource, 0) + amount
        if unlocked.bandwidth == 0 and unlocked.energy == 0:
            del account.records[(receiver, False)]
        else:
            account.records[(receiver, False)] = unlocked
        if (receiver, True) not in account.records and (receiver, False) not in account.records:
            account.to_index.pop(receiver, None)  # unDelegateV2
            target.from_index.pop(owner, None)
        return Effects()

    def _unfreeze_v1(self, owner: str, resource: str, now_ms: int) -> Effects:
        stake = self.peek(owner).legacy.get(resource)
        if stake is None or stake.amount <= 0:
            raise Rejected(f"no frozenBalance({resource})")
        if stake.expire_ms > now_ms:
            raise Rejected(f"It's not time to unfreeze({resource}).")
        del self.account(owner).legacy[resource]
        return Effects(unfreeze_amount=stake.amount)


def _withdraw_matured(account: StakeAccount, now_ms: int) -> int:
    withdrawn = account.matured(now_ms)
    account.lots = [lot for lot in account.lots if lot.expire_ms > now_ms]
    return withdrawn


def _unlock_expired(account: StakeAccount, receiver: str, now_ms: int) -> None:
    """DelegatedResourceStore.unLockExpireResource: each resource whose lock expire time is < now
    moves into the unlocked record (created if absent, even with zero balances, as java-tron
    does); the locked record goes once both its balances are 0."""
    locked = account.records.get((receiver, True))
    if locked is None:
        return
    if locked.expire_energy >= now_ms and locked.expire_bandwidth >= now_ms:
        return
    unlocked = account.records.get((receiver, False), DelegatedRecord())
    for resource in ("ENERGY", "BANDWIDTH"):
        if locked.expire(resource) < now_ms:
            unlocked = unlocked.added(resource, locked.balance(resource), 0)
            locked = locked.cleared(resource)
    if locked.bandwidth == 0 and locked.energy == 0:
        del account.records[(receiver, True)]
    else:
        account.records[(receiver, True)] = locked
    account.records[(receiver, False)] = unlocked


def _int(value: dict[str, object], key: str) -> int:
    return int(str(value.get(key, 0) or 0))
