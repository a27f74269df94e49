"""GET /api/accounts/<account>/reclaimable: what the account can take back from its receivers now,
and what it can in the next hour.

From the account's position at the listener's checkpoint (ledger/store/positions.py), at chain time
(the checkpoint block's time, the next block's "now"): a lock whose expire time is before it has
ended (java-tron merges it into the unlocked record at the next delegate or undelegate and lets it
be undelegated: ledger/positions.py); an unlocked delegation could always be undelegated. Amounts
in sun, in TRX and in energy / bandwidth units (the network's totals last read, ledger/chain/resources.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from math import ceil
from typing import Any

from flask import Blueprint, Response

from ledger.chain.resources import TRX_PRECISION, NetworkTotals
from ledger.positions import chain_time_ms
from ledger.store.cache import Fill
from ledger.store.network_totals import latest_totals
from ledger.store.positions import read_at_checkpoint
from web.params import resolve_account
from web.pg import read_connection
from web.resources import resources
from web.responses import dumps

bp = Blueprint("reclaimable", __name__)

SOON_MS = 3_600_000  # "ending soon": within the next hour of chain time


def _ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def reclaim_lists(
    pairs: dict[tuple[str, str], Any], now_ms: int, totals: NetworkTotals | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
    """(reclaimable now, ending within the hour, chain time of the next change) of a position's pairs."""
    now_list: list[dict[str, Any]] = []
    soon: list[dict[str, Any]] = []
    changes: list[int] = []

    def entry(receiver: str, res: str, amount: int) -> dict[str, Any]:
        return {
            "receiver_address": receiver,
            "resource": res,
            "amount": amount,
            "trx": format(Decimal(amount) / TRX_PRECISION, "f"),
            "units": None if totals is None else totals.units(res, amount),
        }

    for (receiver, res), pair in sorted(pairs.items()):
        if pair.unlocked:
            now_list.append({**entry(receiver, res, pair.unlocked), "lock_end": None, "ended_seconds_ago": None})
        if not pair.locked:
            continue
        end = pair.expire_ms
        if end < now_ms:
            ago = (now_ms - end) // 1000
            now_list.append({**entry(receiver, res, pair.locked), "lock_end": _ms_time(end), "ended_seconds_ago": ago})
        else:
            changes.append(end + 1)
            if end < now_ms + SOON_MS:
                left = ceil((end + 1 - now_ms) / 1000)
                soon.append({**entry(receiver, res, pair.locked), "lock_end": _ms_time(end), "ends_in_seconds": left})
    soon.sort(key=lambda e: (e["lock_end"], e["receiver_address"], e["resource"]))
    return now_list, soon, min(changes) if changes else None


@bp.get("/api/accounts/<account_key>/reclaimable")
def reclaimable(account_key: str) -> Response:
    res = resources()
    account = resolve_account(res.accounts, account_key, "account")

    def load() -> Fill:
        with read_connection(res.pool) as conn:
            found = read_at_checkpoint(conn, account.address, res.settings.unfreeze_delay_seconds * 1000)
            stored = latest_totals(conn)
        now_ms = chain_time_ms(found.checkpoint_time_ms, found.position.time_ms)
        now_list, soon, next_change = reclaim_lists(
            found.position.pairs, now_ms, None if stored is None else stored.totals
        )
        as_of_block = max(found.position.block_num, -1 if found.checkpoint_block is None else found.checkpoint_block)
        data = {
            "owner_address": account.address,
            "as_of_block": as_of_block,
            "as_of_time": _ms_time(now_ms),
            "units_block": None if stored is None else stored.block_num,
            "reclaimable": now_list,
            "ending_within_hour": soon,
        }
        meta: dict[str, object] = {"source": "database"}
        payload = {"success": True, "data": data, "meta": meta}
        response = dumps(payload)
        meta["source"] = "cache"
        ttl = res.settings.cache_ttl_summary
        if next_change is not None:
            ttl = min(ttl, ceil((next_change - now_ms) / 1000))  # a lock ends: the lists change with no write
        return Fill(response, dumps(payload), max(1, min(ttl, 60)))

    body, _ = res.pages.fetch(account.address, "reclaimable", load)
    return Response(body, mimetype="application/json")
