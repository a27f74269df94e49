"""Opening state: stake that accounts held before the first block the simulator serves.

Real pool accounts staked long before any ledger starts watching (every V1 stake predates
Stake 2.0), so the chain's account endpoints show state that no served transaction explains.
`--opening-state` (env SIM_OPENING_STATE) gives it; no transaction is generated for it:

- `random`: every tracked account starts with frozenV2 in all three resources, V1 stake (some
  already unfreezable, some expiring during the run), pending and matured unfreeze lots, locked
  (short and long locks, so some expire within a test run) and unlocked delegations to customers,
  and delegations received from untracked stakers (whose opening state then holds them too).
- a JSON object (inline, or `@path` to a file), base58 or hex addresses as keys:

      {"T...": {"frozenV2": {"BANDWIDTH": 5000000, "ENERGY": 7000000, "TRON_POWER": 0},
                "unfrozenV2": [{"type": "ENERGY", "unfreeze_amount": 1000000, "expire_in_ms": 60000}],
                "frozenV1": {"ENERGY": {"frozen_balance": 2000000, "expire_in_ms": -1000}},
                "delegations": [{"to": "T...", "resource": "ENERGY", "balance": 3000000,
                                 "lock": true, "expire_in_ms": 30000}]}}

  `frozenV2` is the chain's frozenV2, which excludes delegated-out stake (delegations add to
  delegated_frozenV2_balance_for_* and to the receiver's acquired_*). Times are `expire_in_ms`
  relative to the opening time (the first block's parent timestamp, the "now" of its transactions),
  or absolute `unfreeze_expire_time` / `expire_time` in ms. Delegations to one receiver with the
  same `lock` add up in one record; a later locked one replaces the expire time, as on chain.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .addresses import base58_to_hex, derive_address
from .stake_state import DELEGATABLE, RESOURCES, TRX, DelegatedRecord, LegacyFrozen, StakeAccount, UnfreezeLot

CUSTOMERS = 80  # same pool labels as simulator.generator, so opening receivers are its customers
OTHER_STAKERS = 40


def parse_opening(text: str) -> dict[str, Any] | str | None:
    """The flag's value checked: None (no opening state), "random", or the JSON object."""
    text = text.strip()
    if not text or text.lower() in ("none", "0", "false", "off"):
        return None
    if text.lower() == "random":
        return "random"
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError("the opening state must be a JSON object keyed by account")
    for address, account in spec.items():
        _hex(address)
        if not isinstance(account, dict):
            raise ValueError(f"{address}: the account's opening state must be an object")
    return spec


def build_opening(
    spec: dict[str, Any] | str | None, now_ms: int, seed: int, tracked: list[str], delay_ms: int
) -> dict[str, StakeAccount]:
    """The accounts (hex -> state) before the first block, whose transactions run at `now_ms`."""
    if spec is None:
        return {}
    if spec == "random":
        spec = random_spec(seed, tracked, delay_ms)
    assert isinstance(spec, dict)
    accounts: dict[str, StakeAccount] = {}

    def account(address: str) -> StakeAccount:
        return accounts.setdefault(address, StakeAccount(address))

    for address, entry in spec.items():
        owner = account(_hex(address))
        for resource, amount in dict(entry.get("frozenV2", {})).items():
            _resource(resource, RESOURCES)
            owner.frozen[resource] = owner.frozen.get(resource, 0) + _amount(amount)
        for lot in entry.get("unfrozenV2", []):
            resource = _resource(lot.get("type", "BANDWIDTH"), RESOURCES)
            expire = _time(lot, "unfreeze_expire_time", now_ms)
            owner.lots.append(UnfreezeLot(resource, _amount(lot["unfreeze_amount"]), expire))
        for resource, stake in dict(entry.get("frozenV1", {})).items():
            _resource(resource, DELEGATABLE)
            owner.legacy[resource] = LegacyFrozen(_amount(stake["frozen_balance"]), _time(stake, "expire_time", now_ms))
        for index, delegation in enumerate(entry.get("delegations", [])):
            _delegate(owner, account(_hex(delegation["to"])), delegation, now_ms, index)
    return accounts


def _delegate(owner: StakeAccount, receiver: StakeAccount, item: Mapping[str, Any], now_ms: int, index: int) -> None:
    if receiver.address == owner.address:
        raise ValueError(f"{owner.address}: a delegation to itself")
    resource = _resource(item.get("resource", "BANDWIDTH"), DELEGATABLE)
    amount = _amount(item["balance"])
    lock = bool(item.get("lock", False))
    expire = _time(item, "expire_time", now_ms) if lock else 0
    key = (receiver.address, lock)
    owner.records[key] = owner.records.get(key, DelegatedRecord()).added(resource, amount, expire)
    owner.delegated_out[resource] = owner.delegated_out.get(resource, 0) + amount
    receiver.acquired[resource] = receiver.acquired.get(resource, 0) + amount
    # The index orders by the time of the last delegate; opening ones happened before `now_ms`.
    owner.to_index.setdefault(receiver.address, now_ms - 1_000_000 + index)
    receiver.from_index.setdefault(owner.address, now_ms - 1_000_000 + index)


def random_spec(seed: int, tracked: list[str], delay_ms: int) -> dict[str, Any]:
    """A seeded opening state for every tracked account (see the module docstring)."""
    rng = random.Random(f"sim:{seed}:opening")
    customers = [derive_address(f"sim:{seed}:customer:{i}") for i in range(CUSTOMERS)]
    stakers = [derive_address(f"sim:{seed}:staker:{i}") for i in range(OTHER_STAKERS)]
    spec: dict[str, Any] = {}

    def trx(low: int, high: int) -> int:
        return rng.randint(low, high) * TRX + rng.choice((0, 0, rng.randint(1, TRX - 1)))

    for address in tracked:
        delegations = []
        for receiver in rng.sample(customers, rng.randint(3, 6)):
            for resource in rng.sample(DELEGATABLE, rng.randint(1, 2)):
                lock = rng.random() < 0.6
                # Short locks expire within a test run (then merge on the next delegate/undelegate).
                expire = rng.choice((9_000, 30_000, 120_000, 600_000, 86_400_000)) if lock else 0
                delegations.append(
                    {
                        "to": receiver,
                        "resource": resource,
                        "balance": trx(1, 50_000),
                        "lock": lock,
                        "expire_in_ms": expire,
                    }
                )
        spec[address] = {
            "frozenV2": {"BANDWIDTH": trx(1, 200_000), "ENERGY": trx(1, 500_000), "TRON_POWER": trx(0, 1_000)},
            "unfrozenV2": [
                {
                    "type": rng.choice(RESOURCES),
                    "unfreeze_amount": trx(1, 10_000),
                    "expire_in_ms": rng.randint(-delay_ms // 2, delay_ms) // 1000 * 1000,
                }
                for _ in range(rng.randint(1, 4))
            ],
            "frozenV1": {
                "BANDWIDTH": {"frozen_balance": trx(1, 20_000), "expire_in_ms": -rng.randint(1, 10**6) * 1000},
                "ENERGY": {"frozen_balance": trx(1, 20_000), "expire_in_ms": rng.choice((-3_000, 30_000, 90_000))},
            },
            "delegations": delegations,
        }
        # Delegations received from untracked stakers, which then hold that stake too.
        for staker in rng.sample(stakers[:8], 2):
            entry = spec.setdefault(staker, {"frozenV2": {"ENERGY": trx(1, 100_000)}, "delegations": []})
            lock = rng.random() < 0.5
            entry["delegations"].append(
                {"to": address, "resource": "ENERGY", "balance": trx(1, 10_000), "lock": lock, "expire_in_ms": 60_000}
            )
    return spec


def _hex(address: str) -> str:
    if len(address) == 42 and address.startswith("41"):
        bytes.fromhex(address)
        return address.lower()
    return base58_to_hex(address)


def _resource(name: object, allowed: tuple[str, ...]) -> str:
    if name not in allowed:
        raise ValueError(f"resource {name!r} not in {allowed}")
    return str(name)


def _amount(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"amount must be a non-negative integer (sun), got {value!r}")
    return value


def _time(item: Mapping[str, Any], absolute_key: str, now_ms: int) -> int:
    if absolute_key in item:
        return int(item[absolute_key])
    return now_ms + int(item.get("expire_in_ms", 0))
