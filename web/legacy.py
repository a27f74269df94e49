"""The legacy path: a records page answered the old platform's way, from TronGrid's account history.

The platform this ledger replaces paged `GET /v1/accounts/{address}/transactions` for every
screen. This module does the same for one records request (stake, delegate or unfreeze records
of one account, numbered page + limit), so it can answer:
- the share of accounts a gray release still sends the old way (`meta.source: "legacy"`),
- requests that neither PostgreSQL nor the cache can answer (`meta.source: "fallback"`),
- the shadow comparison of a sample of native answers (web/shadow.py).

It uses the product's one pager over TronGrid's account index (`ledger.chain.trongrid`, so the
API key, the shared request budget and the "suspended for N s" handling are the same as the
listener's) and its one TronGrid record reader (`ledger.chain.parser.parse_trongrid_record`), and
maps each operation to the row shape the native API returns (web/queries.py), so a client cannot
tell which path answered except by `meta.source`. Against real TronGrid it needs nothing but
TRON_NODE_URL and TRON_API_KEY.

What the old way cannot know, and therefore differs from a native row:
- `id` is null (it is this ledger's row number);
- only confirmed transactions are read (the pager's rule);
- the parent block's time is taken as one slot (3 s) before the block (as the history backfill
  does, listener/history.py), so a lock end or lot maturity is late by the slots missed, if any;
- an unfreeze lot is `pending` or `withdrawable` by its time only (`ledger.positions.lot_status`,
  at the wall clock: this path reads no checkpoint to take chain time from): whether a later
  withdraw or cancel settled it would need the account's whole history.

Cost: one TronGrid page holds 200 transactions of any kind; a page of records needs
ceil((page * limit + 1) / stake share of 200) of them, capped at `max_pages` (then the page is
answered from what was read, `complete` false).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.chain.node import TronNode
from ledger.chain.parser import parse_trongrid_record
from ledger.chain.trongrid import account_pages
from ledger.chain.values import ChainDataError
from ledger.domain import (
    BLOCK_INTERVAL_MS,
    CONFIRMED,
    DELEGATE_KINDS,
    FAILED,
    STAKE_KINDS,
    UNFREEZE,
    UNFREEZE_V2,
    Operation,
)
from ledger.positions import lot_status

log = logging.getLogger(__name__)

KINDS = ("stake", "delegate", "unfreeze")
DEFAULT_MAX_PAGES = 3


@dataclass(frozen=True)
class LegacyPage:
    rows: list[dict[str, Any]]  # at most `limit`, newest first, in the native row shape
    requests: int  # TronGrid requests it took
    complete: bool  # False: cut at max_pages before the page was full or the history ended


def legacy_page(
    node: TronNode,
    kind: str,
    address: str,
    *,
    page: int,
    limit: int,
    unfreeze_delay_seconds: int,
    max_pages: int = DEFAULT_MAX_PAGES,
    now: datetime | None = None,
) -> LegacyPage:
    """Page `page` (1-based) of `limit` `kind` records of `address`, newest first, from TronGrid.

    Raises NodeUnavailable (BudgetUnavailable included) when TronGrid cannot answer."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    wanted = page * limit
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for requests, found in enumerate(account_pages(node, address, newest_first=True), start=1):
        for rec in found.records:
            rows.extend(record_rows(rec, kind, address, unfreeze_delay_seconds, now))
        if len(rows) >= wanted or found.fingerprint is None:
            return LegacyPage(rows[wanted - limit : wanted], requests, True)
        if requests >= max_pages:
            log.info("legacy page of %s cut at %d TronGrid pages", address, requests)
            return LegacyPage(rows[wanted - limit : wanted], requests, False)
    raise AssertionError("account_pages ends with a page without a fingerprint")


def record_rows(
    rec: Mapping[str, Any], kind: str, address: str, unfreeze_delay_seconds: int, now: datetime
) -> Iterator[dict[str, Any]]:
    """The native rows of list `kind` of `address` in one TronGrid record, newest (highest op_index) first."""
    try:
        ops = parse_trongrid_record(rec, status=CONFIRMED)
    except ChainDataError as exc:
        # The native path skips the same transaction (a ParseIssue in the listener).
        log.debug("legacy: skipped a malformed TronGrid record: %s", exc)
        return
    for op in reversed(ops):
        op_row = _row(op, kind, address, unfreeze_delay_seconds, now)
        if op_row is not None:
            yield op_row


def _row(op: Operation, kind: str, address: str, delay_s: int, now: datetime) -> dict[str, Any] | None:
    parent_ms = op.block_time_ms - BLOCK_INTERVAL_MS  # see the module docstring
    common = {
        "id": None,
        "tx_id": op.tx_id,
        "op_index": op.op_index,
        "block_num": op.block_num,
        "block_time": _time(op.block_time_ms),
        "owner_address": op.owner_address,
        "operation_type": op.kind,
        "contract_type": op.contract_type,
        "resource": op.resource,
        "amount": op.amount,
        "status": op.status,
    }
    if kind == "stake":
        if op.kind not in STAKE_KINDS or op.owner_address != address:
            return None
        return common
    if kind == "delegate":
        if op.kind not in DELEGATE_KINDS or address not in (op.owner_address, op.receiver_address):
            return None
        expire = parent_ms + op.lock_period * BLOCK_INTERVAL_MS if op.lock else None
        return common | {
            "receiver_address": op.receiver_address,
            "lock": op.lock,
            "lock_period": op.lock_period,
            "lock_expire_time": None if expire is None else _time(expire),
        }
    # unfreeze lots: a non-failed UnfreezeBalanceV2 (a failed one never created a lot)
    if op.kind != UNFREEZE or op.contract_type != UNFREEZE_V2 or op.owner_address != address or op.status == FAILED:
        return None
    available_ms = parent_ms + delay_s * 1000
    # A lot's status is its own (by its time), not its transaction's; the other fields are the
    # operation's (its kind and contract type are the ones checked above).
    return common | {
        "status": lot_status("pending", available_ms, int(now.timestamp() * 1000)),
        "available_time": _time(available_ms),
        "settled_tx_id": None,
    }


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
