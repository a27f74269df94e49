"""The lifecycle job: bring record states up to date with time and the chain, whatever messages were lost.

- pending records at or below the solidified block are confirmed (a lost or dead-lettered
  `confirm_blocks`, a listener that died before it sent one);
- records of blocks that left the chain (the listener notes them in `orphaned_blocks` before it
  sends the new branch) that are still pending are orphaned: their `revert_blocks` was lost or
  dead-lettered;
- unfreeze lots whose unstake delay has passed turn `withdrawable` in the table (the API derives
  it when read as well; storing it makes the table answer the same), and the owners' cached
  pages are dropped.

Locks need nothing stored: a delegation keeps its `lock_expire_time` and readers compare it with
the time. Every step is one idempotent statement (or the workers' own confirm/revert), so a rerun
or a concurrent listener changes nothing twice.
"""

from __future__ import annotations

import logging

import psycopg

from ledger.chain.node import NodeUnavailable, TronNode
from workers import persist

log = logging.getLogger(__name__)

_PENDING_BELOW = """
SELECT (SELECT count(*) FROM stake_records WHERE status = 'pending' AND block_num <= %(solid)s)
     + (SELECT count(*) FROM delegate_records WHERE status = 'pending' AND block_num <= %(solid)s)
"""

# Blocks that left the chain and still have records not orphaned (their revert never ran).
_UNREVERTED = """
SELECT o.block_num, o.block_id FROM orphaned_blocks o
WHERE EXISTS (SELECT 1 FROM stake_records s WHERE s.block_id = o.block_id AND s.status = 'pending')
   OR EXISTS (SELECT 1 FROM delegate_records d WHERE d.block_id = o.block_id AND d.status = 'pending')
ORDER BY o.block_num
"""

_MATURED = """
UPDATE unfreeze_records SET status = 'withdrawable', updated_at = now()
WHERE status = 'pending' AND available_time <= now()
RETURNING owner_address
"""


def run_lifecycle(conn: psycopg.Connection, node: TronNode | None) -> tuple[dict[str, int], set[str]]:
    """One lifecycle pass; returns its counts and the accounts whose cached pages must go."""
    touched: set[str] = set()
    counts = {"confirmed": 0, "orphaned_blocks": 0, "withdrawable": 0}

    solid = _solid_block(conn, node)
    if solid >= 0:
        row = conn.execute(_PENDING_BELOW, {"solid": solid}).fetchone()
        before = int(row[0]) if row else 0
        touched |= persist.confirm_blocks(conn, solid)
        row = conn.execute(_PENDING_BELOW, {"solid": solid}).fetchone()
        counts["confirmed"] = before - (int(row[0]) if row else 0)

    blocks = [[int(num), str(block_id)] for num, block_id in conn.execute(_UNREVERTED).fetchall()]
    if blocks:
        touched |= persist.revert_blocks(conn, blocks)
        counts["orphaned_blocks"] = len(blocks)
        log.warning("lifecycle: orphaned the records of %d block(s) whose revert never ran", len(blocks))

    matured = [owner for (owner,) in conn.execute(_MATURED).fetchall()]
    counts["withdrawable"] = len(matured)
    touched |= set(matured)
    return counts, touched


def _solid_block(conn: psycopg.Connection, node: TronNode | None) -> int:
    # The node's answer is the truth; the listener's last note is the fallback when it is away.
    row = conn.execute("SELECT solid_block FROM chain_state WHERE id = 1").fetchone()
    noted = int(row[0]) if row and row[0] else -1
    if node is None:
        return noted
    try:
        return max(noted, node.solid_block_number())
    except NodeUnavailable as exc:
        log.warning("lifecycle: solid head unavailable (%s); using the listener's last one, %s", exc, noted)
        return noted
