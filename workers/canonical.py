"""Whether a block is on the canonical chain, before its records are orphaned or restored.

A revert must never orphan a block the chain still has. The listener's rollback only records as
orphaned the blocks its walk back saw replaced, in a fenced transaction; the workers check again
(belt and braces: a message queued by an earlier release, a re-send, a bug) with the evidence at
hand, cheapest first:

- the block id is among the listener's recent blocks: the chain as the listener last read it
  holds it -> on the chain;
- it is in `orphaned_blocks` with `checked_at` set (a rollback, or an earlier check, showed it
  replaced) -> off the chain;
- the listener's recent blocks hold another block at its height (a checkpoint passed that height
  on another block) -> off the chain;
- else the node is asked for its block at that height: the same id -> on the chain, another id ->
  off the chain; no block there, no node, or no answer -> not known yet.

Reconciliation (`repair_orphans`, run by the lifecycle job) uses the same verdicts on orphaned
blocks nobody has checked yet (recorded before checks existed) and on orphaned blocks the listener
records again (a chain that switched back): those on the chain are restored with their records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.chain.values import NodeError
from workers import persist

log = logging.getLogger(__name__)

Block = tuple[int, str]  # (block number, block id)
BlockIdAt = Callable[[int], str | None]  # the node's block id at a height; None if it has none

# Unchecked orphaned blocks looked at per reconciliation run (each may cost one node request).
CHECKS_PER_RUN = 500


@dataclass
class Verdicts:
    off_chain: list[Block] = field(default_factory=list)
    on_chain: list[Block] = field(default_factory=list)
    unknown: list[Block] = field(default_factory=list)


def node_block_ids(node: TronNode | None) -> BlockIdAt | None:
    """The node's block id at a height (a header request), or None without a node."""
    if node is None:
        return None

    def at(num: int) -> str | None:
        header = node.block_header(num)
        return str(header["blockID"]) if header and isinstance(header.get("blockID"), str) else None

    return at


_EVIDENCE = """
SELECT b.num, b.id,
       EXISTS (SELECT 1 FROM recent_blocks r WHERE r.block_id = b.id),
       EXISTS (SELECT 1 FROM orphaned_blocks o WHERE o.block_id = b.id AND o.checked_at IS NOT NULL),
       EXISTS (SELECT 1 FROM recent_blocks r WHERE r.block_num = b.num AND r.block_id <> b.id)
FROM unnest(%s::bigint[], %s::text[]) WITH ORDINALITY AS b(num, id, n)
ORDER BY b.n
"""


def classify(conn: psycopg.Connection, blocks: list[Block], block_id_at: BlockIdAt | None) -> Verdicts:
    """Sort `blocks` by what is known of them (see the module doc). Node requests are made here,
    outside any transaction; call it before the one that acts on the verdicts."""
    verdicts = Verdicts()
    if not blocks:
        return verdicts
    rows = conn.execute(_EVIDENCE, ([num for num, _ in blocks], [bid for _, bid in blocks])).fetchall()
    for num, block_id, recorded, checked, passed in rows:
        block = (int(num), str(block_id))
        if recorded:
            verdicts.on_chain.append(block)
        elif checked or passed:
            verdicts.off_chain.append(block)
        else:
            _ask_node(block, block_id_at, verdicts)
    return verdicts


def _ask_node(block: Block, block_id_at: BlockIdAt | None, verdicts: Verdicts) -> None:
    if block_id_at is None:
        verdicts.unknown.append(block)
        return
    try:
        theirs = block_id_at(block[0])
    except (NodeUnavailable, NodeError) as exc:
        log.info("block %s: the node did not say which block is at its height (%s)", block[0], exc)
        verdicts.unknown.append(block)
        return
    if theirs is None:
        # A node without the height (behind, or a fork that left the chain shorter) shows nothing.
        verdicts.unknown.append(block)
    elif theirs == block[1]:
        verdicts.on_chain.append(block)
    else:
        verdicts.off_chain.append(block)


_UNCHECKED = """
SELECT block_num, block_id FROM orphaned_blocks o
WHERE checked_at IS NULL OR EXISTS (SELECT 1 FROM recent_blocks r WHERE r.block_id = o.block_id)
ORDER BY block_num
LIMIT %s
"""


def repair_orphans(
    conn: psycopg.Connection, block_id_at: BlockIdAt | None, limit: int = CHECKS_PER_RUN
) -> tuple[dict[str, int], set[str]]:
    """Check orphaned blocks nobody has shown to be off the chain (and those the listener records
    again); restore the canonical ones with their records. Returns the counts and the accounts
    whose cached pages must go."""
    candidates = [(int(num), str(block_id)) for num, block_id in conn.execute(_UNCHECKED, (limit,)).fetchall()]
    verdicts = classify(conn, candidates, block_id_at)
    if verdicts.off_chain:
        conn.execute(
            "UPDATE orphaned_blocks SET checked_at = now() WHERE block_id = ANY(%s) AND checked_at IS NULL",
            ([bid for _, bid in verdicts.off_chain],),
        )
    records, touched = persist.restore_blocks(conn, verdicts.on_chain) if verdicts.on_chain else (0, set())
    counts = {
        "orphans_checked": len(verdicts.off_chain),
        "canonical_blocks_restored": len(verdicts.on_chain),
        "canonical_records_restored": records,
        "orphans_unknown": len(verdicts.unknown),
    }
    if verdicts.on_chain:
        log.warning(
            "reconciliation: %d block(s) recorded as orphaned are on the canonical chain: %d record(s) restored"
            " (first block %s)",
            len(verdicts.on_chain),
            records,
            verdicts.on_chain[0][0],
        )
    return counts, touched
