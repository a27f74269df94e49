"""The compatibility shape: record pages as the plan's tables name them, for the platform's frontend.

A pure rendering step over a native page (`{success, data, meta}` as web/records.py builds it, from
whichever source answered): fields renamed and the platform's `pool_account_id` added to each
row; `meta` passes through unchanged (`page`, `limit`, `source`, `next_cursor`). Nothing here reads
a database or a cache, so whatever chooses the source of a page chooses it for both shapes.

Native -> compatibility names: `tx_id` -> `tx_hash`, `block_num` -> `block_number`, `block_time` ->
`created_at` (the block's time, ISO-8601 UTC, not when the ledger stored the row), `resource` ->
`resource_type`, `settled_tx_id` -> `settled_tx_hash`; an unfreeze lot also carries its transaction as
`unfreeze_tx_hash`, the plan's name in `unfreeze_records` (`tx_hash` stays, for readers of the common
fields); `pool_account_id` is the platform's external
id of the account the page was asked for (a JSON string, as imported). Side by side: docs/API.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (compatibility name, native name), in the order the fields are written.
_COMMON = (
    ("id", "id"),
    ("tx_hash", "tx_id"),
    ("op_index", "op_index"),
    ("block_number", "block_num"),
    ("created_at", "block_time"),
    ("owner_address", "owner_address"),
    ("operation_type", "operation_type"),
    ("contract_type", "contract_type"),
    ("resource_type", "resource"),
    ("amount", "amount"),
    ("status", "status"),
)
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "stake": _COMMON,
    "delegate": (
        *_COMMON,
        ("receiver_address", "receiver_address"),
        ("lock", "lock"),
        ("lock_period", "lock_period"),
        ("lock_expire_time", "lock_expire_time"),
    ),
    "unfreeze": (
        *_COMMON,
        ("unfreeze_tx_hash", "tx_id"),
        ("available_time", "available_time"),
        ("settled_tx_hash", "settled_tx_id"),
    ),
}


def compat_record(kind: str, row: Mapping[str, Any], external_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pool_account_id": external_id}
    for name, native in FIELDS[kind]:
        out[name] = row[native]
    return out


def compat_page(kind: str, page: Mapping[str, Any], external_id: str) -> dict[str, Any]:
    """The compatibility body of a native page of `kind` records."""
    return {
        "success": page["success"],
        "data": [compat_record(kind, row, external_id) for row in page["data"]],
        "meta": dict(page["meta"]),
    }
