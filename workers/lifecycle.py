"""The lifecycle job: what lost `confirm_blocks` / `revert_blocks` messages left undone, sent again.

The accounting's re-send (`ledger.store.accounting.resend_lost_blocks`) decides what is overdue,
as it does for the listener's repair pass; this job adds the node's solidified head, so records
still get confirmed while no listener runs to note it. What it sends, the workers' own actors
apply (with the settings' unfreeze delay, like any confirmation): nothing is written here.

Lots need nothing either: whether one is withdrawable is decided when it is read, on chain time
(`ledger.positions.lot_status`), and a delegation's lock is compared with that time the same way.
"""

from __future__ import annotations

import logging

import psycopg

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.coordination.queue import Sink
from ledger.store.accounting import resend_lost_blocks

log = logging.getLogger(__name__)


def run_lifecycle(
    conn: psycopg.Connection, node: TronNode | None, sink: Sink, *, grace_seconds: float
) -> dict[str, int]:
    """One lifecycle pass; returns how many confirmations (0 or 1) and reverts it sent again."""
    reconfirmed, reverted = resend_lost_blocks(conn, sink, grace_seconds=grace_seconds, solid_block=_solid(node))
    if reconfirmed is not None or reverted:
        log.warning(
            "lifecycle: confirmation of block %s sent again, reverts of %d block(s) sent again",
            reconfirmed if reconfirmed is not None else "-",
            reverted,
        )
    return {"confirmations": int(reconfirmed is not None), "reverts": reverted}


def _solid(node: TronNode | None) -> int:
    # Beside the listener's last note: the node's answer when it has one.
    if node is None:
        return -1
    try:
        return node.solid_block_number()
    except NodeUnavailable as exc:
        log.warning("lifecycle: solid head unavailable (%s); using the listener's last one", exc)
        return -1
