"""TronGrid's account index, `GET /v1/accounts/{address}/transactions`: the one pager over it.

Three readers page through an account's history: the history backfill (listener/history.py, oldest
first from a date), gap reconciliation (workers/reconcile.py, oldest first from a cursor) and the
old platform's path (web/legacy.py, newest first). Each asks `account_pages` and stops where it
has what it needs. Paging follows `meta.fingerprint` with every other parameter unchanged
(TronGrid's rule, TRON-US/trongrid README); the request goes through the node client, so the API
key, the shared request budget and the "suspended for N s" handling are the same as everywhere.

Only confirmed records are read (`only_confirmed`): TronGrid's unconfirmed index is not final, and
a record must not vanish from one page to the next. The readers that store what they find take a
page's operations from `page_operations`; the old platform's path renders each record itself.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.chain.parser import parse_trongrid_record
from ledger.chain.values import ChainDataError
from ledger.domain import CONFIRMED, Operation

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # TronGrid's maximum `limit`: the fewest requests for a history


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]  # in the order asked for; each has an int blockNumber and block_timestamp
    fingerprint: str | None  # where the next page starts (resume there after a failure); None: the last


def account_pages(
    node: TronNode,
    address: str,
    *,
    newest_first: bool = False,
    since_ms: int | None = None,
    fingerprint: str | None = None,
) -> Iterator[Page]:
    """The account's confirmed transactions, a page at a time (oldest first unless `newest_first`;
    from block time `since_ms` if given; from a page's `fingerprint` to resume). Raises
    NodeUnavailable (BudgetUnavailable included) when a page cannot be had: TronGrid refused it
    (`success: false`), answered something that is not a page, or did not answer."""
    params = {
        "only_confirmed": "true",
        "limit": str(PAGE_SIZE),
        "order_by": "block_timestamp,desc" if newest_first else "block_timestamp,asc",
    }
    if since_ms is not None:
        params["min_timestamp"] = str(since_ms)
    while True:
        reply = node.account_transactions(address, dict(params, fingerprint=fingerprint) if fingerprint else params)
        if reply.get("success") is False:
            raise NodeUnavailable(f"v1/accounts/transactions: {str(reply)[:200]}")
        try:
            records, fingerprint = parse_page(reply)
        except ChainDataError as exc:
            raise NodeUnavailable(str(exc)) from None
        yield Page(records, fingerprint)
        if fingerprint is None:
            return


def parse_page(reply: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The records and `meta.fingerprint` (None on the last page) of a page; ChainDataError when the
    page does not have that shape."""
    data = reply.get("data", [])
    if not isinstance(data, list):
        raise ChainDataError("v1/accounts/transactions: 'data' is not a list")
    meta = reply.get("meta")
    fingerprint = meta.get("fingerprint") if isinstance(meta, Mapping) else None
    if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
        raise ChainDataError(f"v1/accounts/transactions: bad fingerprint {fingerprint!r}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("blockNumber"), int):
            raise ChainDataError(f"v1/accounts/transactions: record {i} has no blockNumber")
        if not isinstance(rec.get("block_timestamp"), int):
            raise ChainDataError(f"v1/accounts/transactions: record {i} has no block_timestamp")
    return data, fingerprint


def page_operations(records: list[dict[str, Any]], accounts: Container[str], reader: str) -> list[Operation]:
    """The operations of a page's records (confirmed) whose owner or receiver is one of `accounts`.

    A malformed record is skipped and logged with its txID, as the listener does with a malformed
    transaction; `reader` names who was reading ("history", "reconciliation")."""
    ops: list[Operation] = []
    for rec in records:
        try:
            parsed = parse_trongrid_record(rec, status=CONFIRMED)
        except ChainDataError as exc:
            log.error("%s skipped a malformed record %s: %s", reader, rec.get("txID"), exc)
            continue
        ops += [op for op in parsed if op.owner_address in accounts or op.receiver_address in accounts]
    return ops
