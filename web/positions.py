"""What a reader sees of a position: per-resource figures at a chain time, and the summary of an
account as of the listener's checkpoint (the rules are ledger/positions.py, the storage
ledger/store/positions.py; the route and its cache are web/summary.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from ledger.chain.resources import NetworkTotals
from ledger.domain import RESOURCES
from ledger.positions import Position, chain_time_ms, withdrawable
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.network_totals import latest_totals
from ledger.store.positions import read_at_checkpoint


def _ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def view(pos: Position, now_ms: int) -> tuple[dict[str, Any], int | None]:
    """Per-resource figures at chain time `now_ms` (the next block's "now"), and the next time a
    figure changes with no write (a lock ending or a lot maturing), in ms, if any.

    A lock with expire time < now is shown unlocked (the next delegate/undelegate merges it); a lot
    with expire time <= now is withdrawable (a withdraw in the next block takes it)."""
    out: dict[str, Any] = {}
    for res in RESOURCES:
        out[res] = {
            "staked": pos.staked[res],
            "available": pos.staked[res],
            "delegated": {"total": 0, "locked": 0, "unlocked": 0, "receivers": []},
            "unstaking": {"total": 0, "lots": []},
            "withdrawable": 0,
            "staked_v1": pos.staked_v1[res],
            "legacy_v1": pos.staked_v1[res],  # the earlier name of staked_v1, kept for clients that read it
        }
    changes: list[int] = []
    for (receiver, res), pair in sorted(pos.pairs.items()):
        locked, unlocked, end = pair.locked, pair.unlocked, pair.expire_ms
        if locked and end < now_ms:
            unlocked, locked = unlocked + locked, 0
        elif locked:
            changes.append(end + 1)
        d = out[res]["delegated"]
        d["total"] += locked + unlocked
        d["locked"] += locked
        d["unlocked"] += unlocked
        d["receivers"].append(
            {
                "receiver_address": receiver,
                "locked": locked,
                "unlocked": unlocked,
                "lock_end": _ms_time(end) if locked else None,
            }
        )
    for lot in sorted(pos.lots, key=lambda lot: (lot.expire_ms, lot.resource)):
        if withdrawable(lot.expire_ms, now_ms):
            out[lot.resource]["withdrawable"] += lot.amount
        else:
            changes.append(lot.expire_ms)
            u = out[lot.resource]["unstaking"]
            u["total"] += lot.amount
            u["lots"].append({"amount": lot.amount, "expire_time": _ms_time(lot.expire_ms)})
    return out, (min(changes) if changes else None)


@dataclass(frozen=True)
class Summary:
    data: dict[str, Any]
    shortfall: dict[str, int]
    next_change_ms: int | None  # chain time when a lock ends or a lot matures (no write needed)
    as_of_time_ms: int
    position: Position | None = None  # what the figures were made of (web/reclaimable.py reads its pairs)
    totals: NetworkTotals | None = None  # the network's totals the units were made with


def add_units(figures: dict[str, Any], totals: NetworkTotals | None) -> None:
    """Each figure in energy / bandwidth units as java-tron computes them (ledger/chain/resources.py),
    from the network's totals last read (`resource_units` says at which block); null for TRON_POWER
    and before any totals were read."""
    for res, fig in figures.items():

        def units(sun: int, res: str = res) -> int | None:
            return None if totals is None else totals.units(res, sun)

        fig["units"] = {
            "staked": units(fig["staked"]),
            "available": units(fig["available"]),
            "delegated": units(fig["delegated"]["total"]),
            "unstaking": units(fig["unstaking"]["total"]),
        }
        for receiver in fig["delegated"]["receivers"]:
            receiver["units"] = units(receiver["locked"] + receiver["unlocked"])


def read_summary(
    conn: psycopg.Connection, address: str, unfreeze_delay_ms: int, checkpoint: str = MAIN_CHECKPOINT
) -> Summary:
    """The account's figures as of the listener's checkpoint: O(receivers + lots + pending tail)."""
    found = read_at_checkpoint(conn, address, unfreeze_delay_ms, checkpoint)
    pos = found.position
    as_of_block = max(pos.block_num, -1 if found.checkpoint_block is None else found.checkpoint_block)
    as_of_ms = chain_time_ms(found.checkpoint_time_ms, pos.time_ms)
    # Chain time of the checkpoint's block: the next block's "now". A lock ending before it shows
    # unlocked and a lot expiring at or before it shows withdrawable, as the next block would see.
    figures, next_change = view(pos, as_of_ms)
    stored = latest_totals(conn)
    add_units(figures, None if stored is None else stored.totals)
    data = {
        "owner_address": address,
        "as_of_block": as_of_block,
        "as_of_time": _ms_time(as_of_ms),
        "resources": figures,
        "withdrawable_now": sum(figures[res]["withdrawable"] for res in RESOURCES),
        "resource_units": None
        if stored is None
        else {
            "block": stored.block_num,
            "read_at": stored.read_at,
            "total_energy_limit": stored.totals.total_energy_limit,
            "total_energy_weight": stored.totals.total_energy_weight,
            "total_net_limit": stored.totals.total_net_limit,
            "total_net_weight": stored.totals.total_net_weight,
        },
    }
    return Summary(data, dict(pos.shortfall), next_change, as_of_ms, pos, None if stored is None else stored.totals)
