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
from ledger.positions import Pair, Position, chain_time_ms, withdrawable
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.network_totals import latest_totals
from ledger.store.positions import ReceiverKey, StoredRead, read_at_checkpoint, read_stored


def _ms_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# The summary's receivers: a page of the (receiver, resource) pairs in that order, the totals over all.
DEFAULT_RECEIVERS = 100
MAX_RECEIVERS = 1000


@dataclass
class Delegated:
    """One resource's delegations over all receivers at a chain time."""

    total: int = 0
    locked: int = 0
    receivers: int = 0


def _shown(pair: Pair, now_ms: int) -> tuple[int, int]:
    """(locked, unlocked) as shown at `now_ms`: a lock with expire time < now is unlocked (the next
    delegate/undelegate merges it)."""
    if pair.locked and pair.expire_ms < now_ms:
        return 0, pair.unlocked + pair.locked
    return pair.locked, pair.unlocked


def render(
    pos: Position,
    now_ms: int,
    delegated: dict[str, Delegated],
    page: list[tuple[ReceiverKey, Pair]],
    lock_change: int | None,
) -> tuple[dict[str, Any], int | None]:
    """Per-resource figures at chain time `now_ms` from the state's balances and lots, the delegated
    totals over all receivers and one page of receivers; and the next time a figure changes with no
    write (`lock_change`, the first lock end + 1 over all receivers, or a lot maturing), if any.
    A lot with expire time <= now is withdrawable (a withdraw in the next block takes it)."""
    out: dict[str, Any] = {}
    for res in RESOURCES:
        d = delegated.get(res, Delegated())
        out[res] = {
            "staked": pos.staked[res],
            "available": pos.staked[res],
            "delegated": {
                "total": d.total,
                "locked": d.locked,
                "unlocked": d.total - d.locked,
                "receivers_count": d.receivers,
                "receivers": [],
            },
            "unstaking": {"total": 0, "lots": []},
            "withdrawable": 0,
            "staked_v1": pos.staked_v1[res],
            "legacy_v1": pos.staked_v1[res],  # the earlier name of staked_v1, kept for clients that read it
        }
    for (receiver, res), pair in page:
        locked, unlocked = _shown(pair, now_ms)
        out[res]["delegated"]["receivers"].append(
            {
                "receiver_address": receiver,
                "locked": locked,
                "unlocked": unlocked,
                "lock_end": _ms_time(pair.expire_ms) if locked else None,
            }
        )
    changes = [] if lock_change is None else [lock_change]
    for lot in sorted(pos.lots, key=lambda lot: (lot.expire_ms, lot.resource)):
        if withdrawable(lot.expire_ms, now_ms):
            out[lot.resource]["withdrawable"] += lot.amount
        else:
            changes.append(lot.expire_ms)
            u = out[lot.resource]["unstaking"]
            u["total"] += lot.amount
            u["lots"].append({"amount": lot.amount, "expire_time": _ms_time(lot.expire_ms)})
    return out, (min(changes) if changes else None)


def _count(delegated: dict[str, Delegated], res: str, pair: Pair, now_ms: int) -> int | None:
    """Add one pair to its resource's totals; its lock's change time when its lock has not ended."""
    d = delegated.setdefault(res, Delegated())
    locked, _ = _shown(pair, now_ms)
    d.total += pair.unlocked + pair.locked
    d.locked += locked
    d.receivers += 1
    return pair.expire_ms + 1 if locked else None


def _by_key(item: tuple[ReceiverKey, Pair]) -> ReceiverKey:
    return item[0]


def view(
    pos: Position, now_ms: int, after: ReceiverKey | None = None, limit: int | None = None
) -> tuple[dict[str, Any], int | None, ReceiverKey | None]:
    """Per-resource figures of a whole state at chain time `now_ms` (the next block's "now"), the
    next time a figure changes with no write, and the key after which the next page of receivers
    starts (None: this page is the last). O(receivers): the summary renders the stored figures
    (`read_summary`); this is the reference it must equal, and the path of a state not folded."""
    delegated: dict[str, Delegated] = {}
    ends = [_count(delegated, res, pair, now_ms) for (_, res), pair in pos.pairs.items()]
    ordered = sorted((item for item in pos.pairs.items() if after is None or item[0] > after), key=_by_key)
    page = ordered if limit is None else ordered[:limit]
    lock_ends = [end for end in ends if end is not None]
    figures, next_change = render(pos, now_ms, delegated, page, min(lock_ends) if lock_ends else None)
    more = limit is not None and len(ordered) > limit
    return figures, next_change, page[-1][0] if more and page else None


def stored_view(found: StoredRead, limit: int) -> tuple[dict[str, Any], int | None, ReceiverKey | None]:
    """`view` of the stored figures: the totals stored over all receivers, less the tail's receivers'
    stored pairs and plus what the tail made of them; the locked amount stored at the folded state's
    time less the locks ended since; the page of stored pairs merged with the tail's ones.
    O(page + tail + locks ended since the folded state's time)."""
    now_ms, pos = found.now_ms, found.position
    delegated = {
        res: Delegated(total, locked - found.ended.get(res, 0), count)
        for res, (total, count, locked) in found.totals.items()
    }
    ends = [] if found.next_end is None else [found.next_end + 1]
    for (_, res), pair in found.touched.items():
        # The tail's receivers: out of the stored totals, and back in below with what the tail made
        # of them.
        d = delegated.setdefault(res, Delegated())
        d.total -= pair.unlocked + pair.locked
        d.locked -= _shown(pair, now_ms)[0]
        d.receivers -= 1
    for (_, res), pair in pos.pairs.items():
        end = _count(delegated, res, pair, now_ms)
        if end is not None:
            ends.append(end)
    after = found.after
    merged = sorted(found.page + [item for item in pos.pairs.items() if after is None or item[0] > after], key=_by_key)
    page = merged[:limit]
    figures, next_change = render(pos, now_ms, delegated, page, min(ends) if ends else None)
    return figures, next_change, page[-1][0] if len(merged) > limit else None


@dataclass(frozen=True)
class Summary:
    data: dict[str, Any]
    shortfall: dict[str, int]
    next_change_ms: int | None  # chain time when a lock ends or a lot matures (no write needed)
    as_of_time_ms: int
    position: Position | None = None  # the whole state the figures were made of (no limit given)
    totals: NetworkTotals | None = None  # the network's totals the units were made with
    next_key: ReceiverKey | None = None  # the last receiver of a page that has more after it
    # Read in the statement of the stored figures; chain_drift None: neither was read (no limit given,
    # or no stored figures).
    chain_drift: dict[str, int] | None = None  # the open drift, what -> difference (web/drift.py)
    opening: tuple[str, int] | None = None  # (source, block) of the opening (`opening_of`)


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
    conn: psycopg.Connection,
    address: str,
    unfreeze_delay_ms: int,
    checkpoint: str = MAIN_CHECKPOINT,
    *,
    after: ReceiverKey | None = None,
    limit: int | None = None,
) -> Summary:
    """The account's figures as of the listener's checkpoint. With a `limit`, the receivers after
    `after` up to it, from the figures stored with the folded state: O(page + pending tail + locks
    not ended). Without one, every receiver, rendered from the whole state (`position` is set):
    O(receivers + lots + pending tail)."""
    # Chain time of the checkpoint's block: the next block's "now". A lock ending before it shows
    # unlocked and a lot expiring at or before it shows withdrawable, as the next block would see.
    stored = None if limit is None else read_stored(conn, address, unfreeze_delay_ms, after, limit, checkpoint)
    whole: Position | None = None
    if stored is not None:
        pos, as_of_ms, mark_block = stored.position, stored.now_ms, stored.checkpoint_block
        figures, next_change, next_key = stored_view(stored, stored.limit)
    else:
        found = read_at_checkpoint(conn, address, unfreeze_delay_ms, checkpoint)
        whole = pos = found.position
        mark_block = found.checkpoint_block
        as_of_ms = chain_time_ms(found.checkpoint_time_ms, pos.time_ms)
        figures, next_change, next_key = view(pos, as_of_ms, after, limit)
    as_of_block = max(pos.block_num, -1 if mark_block is None else mark_block)
    totals = stored.network if stored is not None else latest_totals(conn)
    add_units(figures, None if totals is None else totals.totals)
    data = {
        "owner_address": address,
        "as_of_block": as_of_block,
        "as_of_time": _ms_time(as_of_ms),
        "resources": figures,
        "withdrawable_now": sum(figures[res]["withdrawable"] for res in RESOURCES),
        "resource_units": None
        if totals is None
        else {
            "block": totals.block_num,
            "read_at": totals.read_at,
            "total_energy_limit": totals.totals.total_energy_limit,
            "total_energy_weight": totals.totals.total_energy_weight,
            "total_net_limit": totals.totals.total_net_limit,
            "total_net_weight": totals.totals.total_net_weight,
        },
    }
    return Summary(
        data,
        dict(pos.shortfall),
        next_change,
        as_of_ms,
        whole,
        None if totals is None else totals.totals,
        next_key,
        None if stored is None else stored.drift,
        None if stored is None else stored.opening,
    )
