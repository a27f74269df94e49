"""The lifecycle job: orphaned blocks checked against the canonical chain, and what lost
`confirm_blocks` / `revert_blocks` messages left undone, sent again.

First, reconciliation of orphaned blocks (workers/canonical.py, `repair_orphans`): those nobody has
shown to be off the chain yet are checked, and a block recorded as orphaned that the chain still
has is taken out of `orphaned_blocks` with its records restored; the run's result counts them
(`canonical_blocks_restored`, `canonical_records_restored`). The scheduler ticks every job as it
takes its lease, so this runs at once after an upgrade.

Then the accounting's re-send (`ledger.store.accounting.resend_lost_blocks`) decides what is overdue,
as it does for the listener's repair pass; this job adds the node's solidified head, so records
still get confirmed while no listener runs to note it. What it sends, the workers' own actors
apply (with the settings' unfreeze delay, like any confirmation).

Lots need nothing either: whether one is withdrawable is decided when it is read, on chain time
(`ledger.positions.lot_status`), and a delegation's lock is compared with that time the same way.
"""

from __future__ import annotations

import logging

import psycopg

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.coordination.queue import Sink
from ledger.store.accounting import resend_lost_blocks
from workers.canonical import node_block_ids, repair_orphans

log = logging.getLogger(__name__)


def run_lifecycle(
    conn: psycopg.Connection, node: TronNode | None, sink: Sink, *, grace_seconds: float
) -> tuple[dict[str, int], set[str]]:
    """One lifecycle pass: orphaned blocks checked (and canonical ones restored, with their records),
    then lost confirmations and reverts sent again. Returns the counts and the accounts whose
    cached pages must go."""
    repaired, touched = repair_orphans(conn, node_block_ids(node))
    reconfirmed, reverted = resend_lost_blocks(conn, sink, grace_seconds=grace_seconds, solid_block=_solid(node))
    if reconfirmed is not None or reverted:
        log.warning(
            "lifecycle: confirmation of block %s sent again, reverts of %d block(s) sent again",
            reconfirmed if reconfirmed is not None else "-",
            reverted,
        )
    return {"confirmations": int(reconfirmed is not None), "reverts": reverted, **repaired}, touched


def _solid(node: TronNode | None) -> int:
    # Beside the listener's last note: the node's answer when it has one.
    if node is None:
        return -1
    try:
        return node.solid_block_number()
    except NodeUnavailable as exc:
        log.warning("lifecycle: solid head unavailable (%s); using the listener's last one", exc)
        return -1
