"""Account stake state from `/wallet/getaccount`, TronGrid `/v1/accounts` and `getdelegatedresourcev2`.

These are the chain's own totals, read to reconcile the ledger against (java-tron docs:
docs/api/http/account/getaccount.md, docs/api/http/stake-v2/).
Zero values are omitted by java-tron, so every total defaults to 0 and every resource key is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.chain.values import (
    ChainDataError,
    address,
    as_list,
    as_object,
    check_node_reply,
    opt_int,
    resource,
)
from ledger.domain import RESOURCES

BANDWIDTH, ENERGY, TRON_POWER = RESOURCES
DELEGABLE = (BANDWIDTH, ENERGY)  # TRON_POWER cannot be delegated


@dataclass(frozen=True, slots=True)
class UnfreezeLot:
    """One pending `unfrozenV2` entry: sun that becomes withdrawable at `expire_time_ms`."""

    resource: str
    amount: int
    expire_time_ms: int


@dataclass(frozen=True, slots=True)
class AccountState:
    address: str  # base58
    balance: int  # sun, liquid
    frozen_v2: dict[str, int]  # resource -> own stake, excluding what is delegated out
    unfrozen_v2: tuple[UnfreezeLot, ...]
    delegated_v2: dict[str, int]  # BANDWIDTH/ENERGY -> staked sun delegated to others
    acquired_delegated_v2: dict[str, int]  # BANDWIDTH/ENERGY -> sun delegated to this account
    frozen_v1: dict[str, int]  # legacy Stake 1.0 stake still frozen, by resource


@dataclass(frozen=True, slots=True)
class DelegatedResource:
    """One `getdelegatedresourcev2` entry. A pair can have two: the unlocked and the locked record."""

    from_address: str
    to_address: str
    bandwidth: int
    energy: int
    expire_time_for_bandwidth_ms: int  # lock end for a locked record, else 0
    expire_time_for_energy_ms: int


def parse_account(obj: Any) -> AccountState:
    """Parse a getaccount reply or a TronGrid `/v1/accounts` data item (addresses in either form)."""
    check_node_reply(obj)
    obj = as_object(obj, "account")
    if not obj:
        raise ChainDataError("account reply is {}: the account does not exist")
    where = "account"
    res_info = as_object(obj.get("account_resource", {}), "account.account_resource")

    frozen_v2 = dict.fromkeys(RESOURCES, 0)
    for i, entry in enumerate(as_list(obj.get("frozenV2", []), "account.frozenV2")):
        # `{}` is the BANDWIDTH entry with amount 0: both fields are proto3 defaults.
        entry = as_object(entry, f"account.frozenV2[{i}]")
        frozen_v2[resource(entry, "type", f"account.frozenV2[{i}]")] += opt_int(
            entry, "amount", f"account.frozenV2[{i}]"
        )

    lots = []
    for i, entry in enumerate(as_list(obj.get("unfrozenV2", []), "account.unfrozenV2")):
        entry = as_object(entry, f"account.unfrozenV2[{i}]")
        at = f"account.unfrozenV2[{i}]"
        lots.append(
            UnfreezeLot(
                resource(entry, "type", at),
                opt_int(entry, "unfreeze_amount", at),
                opt_int(entry, "unfreeze_expire_time", at),
            )
        )

    # Bandwidth fields sit at the top level, energy fields inside account_resource (proto layout).
    delegated_v2 = {
        BANDWIDTH: opt_int(obj, "delegated_frozenV2_balance_for_bandwidth", where),
        ENERGY: opt_int(res_info, "delegated_frozenV2_balance_for_energy", f"{where}.account_resource"),
    }
    acquired_v2 = {
        BANDWIDTH: opt_int(obj, "acquired_delegated_frozenV2_balance_for_bandwidth", where),
        ENERGY: opt_int(res_info, "acquired_delegated_frozenV2_balance_for_energy", f"{where}.account_resource"),
    }

    frozen_v1 = dict.fromkeys(RESOURCES, 0)
    for i, entry in enumerate(as_list(obj.get("frozen", []), "account.frozen")):
        frozen_v1[BANDWIDTH] += opt_int(as_object(entry, f"account.frozen[{i}]"), "frozen_balance", where)
    frozen_v1[ENERGY] = _frozen_v1(res_info, "frozen_balance_for_energy")
    frozen_v1[TRON_POWER] = _frozen_v1(obj, "tron_power")

    return AccountState(
        address=address(obj.get("address"), "account.address"),
        balance=opt_int(obj, "balance", where),
        frozen_v2=frozen_v2,
        unfrozen_v2=tuple(lots),
        delegated_v2=delegated_v2,
        acquired_delegated_v2=acquired_v2,
        frozen_v1=frozen_v1,
    )


def account_state(reply: Any, account: str) -> AccountState:
    """The state of `account` from its getaccount reply: the one reader of that reply (opening
    snapshots and state reconciliation both use it). java-tron answers `{}` for an account the
    chain has not seen (GetAccountServlet prints an empty object when the account is null), and an
    account that does not exist holds nothing: every total 0, not an error to retry. A reply about
    another address is a ChainDataError."""
    check_node_reply(reply)
    if isinstance(reply, Mapping) and not reply:
        return empty_account(account)
    state = parse_account(reply)
    if state.address != account:
        raise ChainDataError(f"getaccount for {account} answered for {state.address}")
    return state


def empty_account(account: str) -> AccountState:
    """An account the chain does not know: nothing staked, delegated or unfreezing."""
    return AccountState(
        address=account,
        balance=0,
        frozen_v2=dict.fromkeys(RESOURCES, 0),
        unfrozen_v2=(),
        delegated_v2=dict.fromkeys(DELEGABLE, 0),
        acquired_delegated_v2=dict.fromkeys(DELEGABLE, 0),
        frozen_v1=dict.fromkeys(RESOURCES, 0),
    )


def parse_delegated_resources(reply: Any) -> list[DelegatedResource]:
    """Parse a getdelegatedresourcev2 reply (`{}` = none); a bare list of entries is accepted too."""
    check_node_reply(reply)
    if isinstance(reply, Mapping):
        reply = reply.get("delegatedResource", [])
    entries = as_list(reply, "delegatedResource")
    result = []
    for i, entry in enumerate(entries):
        at = f"delegatedResource[{i}]"
        entry = as_object(entry, at)
        result.append(
            DelegatedResource(
                from_address=address(entry.get("from"), f"{at}.from"),
                to_address=address(entry.get("to"), f"{at}.to"),
                bandwidth=opt_int(entry, "frozen_balance_for_bandwidth", at),
                energy=opt_int(entry, "frozen_balance_for_energy", at),
                expire_time_for_bandwidth_ms=opt_int(entry, "expire_time_for_bandwidth", at),
                expire_time_for_energy_ms=opt_int(entry, "expire_time_for_energy", at),
            )
        )
    return result


def _frozen_v1(obj: Mapping[str, Any], key: str) -> int:
    # A V1 `Frozen` message: {frozen_balance, expire_time}, absent when nothing is frozen.
    frozen = as_object(obj.get(key, {}), f"account.{key}")
    return opt_int(frozen, "frozen_balance", f"account.{key}")
