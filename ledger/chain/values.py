"""Strict readers for java-tron / TronGrid JSON values, and the errors they raise.

java-tron prints proto3 messages with defaults omitted (JsonFormat prints getAllFields(), which skips defaults:
framework/src/main/java/org/tron/core/services/http/JsonFormat.java), so "absent" has a
meaning for every field; these helpers encode those defaults once and reject anything whose type is
wrong. Parsing modules (`parser`, `tron_account`, `tron_trigger`) build on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ledger.chain.address import AddressError, to_base58
from ledger.domain import RESOURCES

# One C-level match per id: the listener checks a few per transaction (a per-character test was 4 %
# of its samples while catching up).
_HEX_ID = re.compile("[0-9a-fA-F]{64}")


class ChainDataError(ValueError):
    """Chain data (block, transaction, info, account...) that does not have the expected shape."""


class NodeError(RuntimeError):
    """A node or TronGrid reply that carries an `Error` key (java-tron answers errors with HTTP 200)."""


def check_node_reply(obj: Any) -> Any:
    """Return `obj` unchanged unless it is an `{"Error": ...}` reply, which raises NodeError."""
    if isinstance(obj, Mapping) and "Error" in obj:
        raise NodeError(f"node replied with an error: {obj['Error']}")
    return obj


def as_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ChainDataError(f"{where} must be an object, got {_type_name(value)}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ChainDataError(f"{where} must be an array, got {_type_name(value)}")
    return value


def as_int(value: Any, where: str) -> int:
    """A non-negative JSON integer. Floats, bools and numeric strings are refused: an amount that
    went through a float may already have lost digits (sun totals exceed 2^53)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChainDataError(f"{where} must be an integer, got {_type_name(value)} {value!r}")
    if value < 0:
        raise ChainDataError(f"{where} must not be negative, got {value}")
    return value


def req_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    if key not in obj:
        raise ChainDataError(f"{where}.{key} is missing")
    return as_int(obj[key], f"{where}.{key}")


def opt_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    """An integer field whose absence means 0 (proto3 omits zero values)."""
    if key not in obj:
        return 0
    return as_int(obj[key], f"{where}.{key}")


def opt_bool(obj: Mapping[str, Any], key: str, where: str) -> bool:
    """A bool field whose absence means false (proto3 omits false)."""
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ChainDataError(f"{where}.{key} must be a boolean, got {_type_name(value)} {value!r}")
    return value


def req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ChainDataError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def hex_id(value: Any, where: str) -> str:
    """A 32-byte id (txID, blockID, hash): 64 hex chars, no `0x`, returned lowercase."""
    if not isinstance(value, str) or _HEX_ID.fullmatch(value) is None:
        raise ChainDataError(f"{where} must be 64 hex characters without 0x, got {value!r}")
    return value.lower()


def address(value: Any, where: str) -> str:
    """An address in hex or base58 form, returned as base58."""
    try:
        return to_base58(value)
    except AddressError as exc:
        raise ChainDataError(f"{where}: {exc}") from None


def resource(obj: Mapping[str, Any], key: str, where: str) -> str:
    """A ResourceCode field: absent = BANDWIDTH (enum 0 is omitted). java-tron prints the name, while
    TronGrid v1 prints V1 contracts' resource as its number and adds `resource_type` with the name;
    both are accepted, and the two must agree when both are there."""
    name = resource_value(obj.get(key), f"{where}.{key}")
    if key == "resource" and "resource_type" in obj:
        alias = resource_value(obj["resource_type"], f"{where}.resource_type")
        if alias != name:
            raise ChainDataError(f"{where}: resource {name} contradicts resource_type {alias}")
    return name


def resource_value(value: Any, where: str) -> str:
    if value is None:
        return RESOURCES[0]
    if isinstance(value, str) and value in RESOURCES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(RESOURCES):
        return RESOURCES[value]
    raise ChainDataError(f"{where} must be one of {RESOURCES} or 0..2, got {value!r}")


def resource_amounts(value: Any, where: str) -> dict[str, int]:
    """A proto `map<string,int64>` keyed by resource name, e.g. `cancel_unfreezeV2_amount`.

    java-tron prints maps as `[{"key": K, "value": V}, ...]`; a plain `{K: V}` object is accepted too.
    Every resource is present in the result (absent = 0)."""
    pairs: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for i, entry in enumerate(value):
            entry = as_object(entry, f"{where}[{i}]")
            # A map entry omits `value` like any proto3 field when it is 0.
            pairs.append((entry.get("key"), entry.get("value", 0)))
    else:
        raise ChainDataError(f"{where} must be a key/value array or an object, got {_type_name(value)}")
    amounts = dict.fromkeys(RESOURCES, 0)
    seen: set[str] = set()
    for key, amount in pairs:
        if key not in amounts:
            raise ChainDataError(f"{where} has unknown resource key {key!r}")
        if key in seen:
            raise ChainDataError(f"{where} repeats resource key {key!r}")
        seen.add(key)
        amounts[key] = as_int(amount, f"{where}[{key}]")
    return amounts


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
