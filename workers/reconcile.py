"""Reconciliation jobs, per pool account: what the listener missed (gaps) and where the ledger's
totals differ from the chain's account state (drift).

Gap reconciliation reads TronGrid's account index (`ledger.chain.trongrid.account_pages`, oldest
first from the account's cursor). Every Stake 2.0 operation of the account that the ledger lacks
goes through the listener's persistence (the same `persist_operation` actor a split group's
messages reach) and is noted in `recovered_operations`. Records are only judged once the listener
must have delivered them: at or below its checkpoint and the solidified head, and older than
GAP_SETTLE_SECONDS (a message still in the queue is not a gap). The cursor moves after each page,
so a run cut short resumes where it stopped.

State reconciliation compares the chain's account state at the solidified block with the ledger's
position of the same account at that block (ledger/positions.py) and stores each difference in
`drift` (what, chain, ledger, since which block); the first run that finds them equal again
closes the row. Stake made by smart contracts (TIP-467) reaches account state without a
top-level transaction, so it shows up here. Each attempt is noted per account in
`chain_comparisons` (when it last compared, at which block, how many figures differed; or why it
could not compare yet: then its run sends it again, ledger/store/jobruns.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import psycopg

from ledger.chain.account import AccountState, account_state
from ledger.chain.node import TronNode
from ledger.chain.trongrid import account_pages, page_operations
from ledger.chain.values import ChainDataError
from ledger.domain import RESOURCES, Operation
from ledger.positions import Position, replay
from ledger.store.accounting import MAIN_CHECKPOINT, checkpoint_block
from ledger.store.positions import load_rows, start_state

log = logging.getLogger(__name__)

MAX_PAGES = 500  # per run; the cursor lets the next run go on


# -- gaps ------------------------------------------------------------------------------------------


def reconcile_gaps(
    conn: psycopg.Connection,
    node: TronNode,
    account: str,
    persist: Callable[[Operation], None],
    *,
    run_id: int | None,
    lookback_seconds: int,
    settle_seconds: int = 120,
    now_ms: int | None = None,
) -> dict[str, int]:
    """One gap run for `account`; returns {"records", "operations", "recovered", "pages"}."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start_ms = _cursor(conn, account) or now_ms - lookback_seconds * 1000
    limit_block = _judged_up_to(conn)
    counts = {"records": 0, "operations": 0, "recovered": 0, "pages": 0}
    headers: dict[int, str] = {}
    for found in account_pages(node, account, since_ms=start_ms):
        counts["pages"] += 1
        judged = []
        young = False  # oldest first: after the first record too young to judge, all are
        for rec in found.records:
            young = rec["blockNumber"] > limit_block or (
                settle_seconds > 0 and rec["block_timestamp"] > now_ms - settle_seconds * 1000
            )
            if young:
                break
            judged.append(rec)
        ops = page_operations(judged, {account}, "reconciliation")
        counts["records"] += len(judged)
        counts["operations"] += len(ops)
        for op in _missing(conn, ops):
            op = replace(op, block_id=_block_id(node, op.block_num, headers))
            persist(op)
            # Counted once, by whichever run notes it first: a delegation between two pool accounts
            # is found by both accounts' runs, maybe at the same time (the upsert makes one row).
            first = conn.execute(
                "INSERT INTO recovered_operations (tx_id, op_index, account, block_num, kind, run_id)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (op.tx_id, op.op_index, account, op.block_num, op.kind, run_id),
            ).fetchone()
            if first is None:
                continue
            counts["recovered"] += 1
            log.warning(
                "reconciliation recovered %s/%s (%s, block %s) of %s",
                op.tx_id,
                op.op_index,
                op.kind,
                op.block_num,
                account,
                extra={"block": op.block_num, "tx": op.tx_id},
            )
        if judged:
            last = judged[-1]
            _save_cursor(conn, account, int(last["block_timestamp"]), int(last["blockNumber"]))
        if young or counts["pages"] >= MAX_PAGES:
            break
    return counts


def _missing(conn: psycopg.Connection, ops: list[Operation]) -> list[Operation]:
    """The operations the ledger does not hold and the listener has not sent (an orphaned row
    counts as missing: the chain has the transaction, so it was re-included where the listener
    did not see it)."""
    if not ops:
        return []
    ids = sorted({op.tx_id for op in ops})
    held = {
        (tx_id, int(op_index))
        for tx_id, op_index in conn.execute(
            "SELECT tx_id, op_index FROM stake_records WHERE tx_id = ANY(%(ids)s) AND status <> 'orphaned'"
            " UNION ALL SELECT tx_id, op_index FROM delegate_records WHERE tx_id = ANY(%(ids)s)"
            " AND status <> 'orphaned'"
            # Sent by the listener and not persisted yet: in flight, the accounting's repair
            # re-sends it if the broker lost it (ledger/store/accounting.py). Not a gap.
            " UNION ALL SELECT tx_id, op_index FROM expected_operations WHERE tx_id = ANY(%(ids)s)",
            {"ids": ids},
        ).fetchall()
    }
    return [op for op in ops if (op.tx_id, op.op_index) not in held]


def _block_id(node: TronNode, num: int, cache: dict[int, str]) -> str:
    # TronGrid records carry the block number, not its id; the id is what forks are judged by.
    # One header per block with a recovered operation (rare), or the listener's note of it.
    if num not in cache:
        header = node.block_header(num)
        if not header or not isinstance(header.get("blockID"), str):
            raise ChainDataError(f"block {num}: no header to take its id from")
        cache[num] = header["blockID"]
    return cache[num]


def _cursor(conn: psycopg.Connection, account: str) -> int | None:
    row = conn.execute("SELECT timestamp_ms FROM reconcile_cursors WHERE account = %s", (account,)).fetchone()
    return int(row[0]) if row else None


def _save_cursor(conn: psycopg.Connection, account: str, timestamp_ms: int, block_num: int) -> None:
    # min_timestamp is inclusive: the next run reads this block's records again (all found, no cost
    # but a comparison), which is what makes a page that ended inside a block safe.
    conn.execute(
        "INSERT INTO reconcile_cursors (account, timestamp_ms, block_num) VALUES (%s, %s, %s)"
        " ON CONFLICT (account) DO UPDATE SET timestamp_ms = greatest(reconcile_cursors.timestamp_ms,"
        " EXCLUDED.timestamp_ms), block_num = greatest(reconcile_cursors.block_num, EXCLUDED.block_num),"
        " updated_at = now()",
        (account, timestamp_ms, block_num),
    )


def _judged_up_to(conn: psycopg.Connection) -> int:
    """The last block a gap run may judge: at or below both the listener's checkpoint (it has sent
    everything up to there) and the solidified head as the listener last noted it (no fork reaches
    below it). Read from the listener's own rows, not asked of the node: that request was one per
    account per run, half of what a gap run cost the shared budget when nothing was missing
    (1,000 of 2,000 requests a run in the soak). The note trails the node's solid head by at most
    LISTENER_SOLID_EVERY_BLOCKS blocks, which only makes the bound more careful (-1: no listener yet)."""
    row = conn.execute(
        "SELECT least(c.block_num, s.solid_block) FROM listener_checkpoint c, chain_state s"
        " WHERE c.name = %s AND s.id = 1",
        (MAIN_CHECKPOINT,),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else -1


# -- state -----------------------------------------------------------------------------------------


def chain_figures(state: AccountState) -> dict[str, int]:
    """The chain's totals in the ledger summary's terms."""
    figures = {}
    for resource in RESOURCES:
        # frozenV2 excludes what is delegated out; the ledger's stake includes it.
        figures[f"staked_v2:{resource}"] = state.frozen_v2[resource] + state.delegated_v2.get(resource, 0)
        figures[f"staked_v1:{resource}"] = state.frozen_v1[resource]
    for resource, amount in state.delegated_v2.items():
        figures[f"delegated_out:{resource}"] = amount
    figures["unfreezing"] = sum(lot.amount for lot in state.unfrozen_v2)
    return figures


def position_figures(pos: Position) -> dict[str, int]:
    """The ledger's position (ledger/positions.py) in the same terms as chain_figures."""
    delegated = {"BANDWIDTH": 0, "ENERGY": 0}
    for (_, resource), pair in pos.pairs.items():
        delegated[resource] = delegated.get(resource, 0) + pair.unlocked + pair.locked
    figures = {}
    for resource in RESOURCES:
        figures[f"staked_v2:{resource}"] = pos.staked[resource] + delegated.get(resource, 0)
        figures[f"staked_v1:{resource}"] = pos.staked_v1[resource]
    for resource, amount in delegated.items():
        figures[f"delegated_out:{resource}"] = amount
    figures["unfreezing"] = sum(lot.amount for lot in pos.lots)
    return figures


def position_at(conn: psycopg.Connection, account: str, block: int, unfreeze_delay_ms: int) -> Position | None:
    """The ledger's position of `account` after `block`: its folded (or opening) state with the
    records up to `block` replayed; None if the state was folded past that block already."""
    pos = start_state(conn, account)
    if pos.block_num > block:
        return None
    return replay(pos, load_rows(conn, account, pos.block_num, block), unfreeze_delay_ms)


def solid_state(node: TronNode, account: str) -> tuple[int, AccountState] | None:
    """The account's state and the solidified block it is as of; None if the solid head moved
    between the reads twice in a row (then the comparison waits and is tried again within its run). An account
    not on chain yet (`{}`) holds nothing: compared as zeros, not retried."""
    for _ in range(2):
        before = node.solid_block_number()
        reply = node.account(account, solid=True)
        after = node.solid_block_number()
        if before == after and before >= 0:
            return before, account_state(reply, account)
    return None


def record_drift(
    conn: psycopg.Connection, account: str, block: int, chain: dict[str, int], ledger: dict[str, int]
) -> int:
    """Open or update a drift row per differing figure, close the rows of figures that agree again.
    Returns how many figures differ."""
    differing = 0
    with conn.transaction():
        for what in sorted(chain.keys() | ledger.keys()):
            on_chain, in_ledger = chain.get(what, 0), ledger.get(what, 0)
            if on_chain != in_ledger:
                differing += 1
                conn.execute(
                    "INSERT INTO drift (account, what, chain_amount, ledger_amount, difference, since_block,"
                    " checked_block) VALUES (%(a)s, %(w)s, %(c)s, %(l)s, %(d)s, %(b)s, %(b)s)"
                    " ON CONFLICT (account, what) WHERE resolved_block IS NULL DO UPDATE SET"
                    " chain_amount = EXCLUDED.chain_amount, ledger_amount = EXCLUDED.ledger_amount,"
                    " difference = EXCLUDED.difference, checked_block = EXCLUDED.checked_block, last_seen = now()",
                    {"a": account, "w": what, "c": on_chain, "l": in_ledger, "d": on_chain - in_ledger, "b": block},
                )
            else:
                conn.execute(
                    "UPDATE drift SET resolved_block = %s, resolved_at = now()"
                    " WHERE account = %s AND what = %s AND resolved_block IS NULL",
                    (block, account, what),
                )
    return differing


def compare_state(
    conn: psycopg.Connection, node: TronNode, account: str, unfreeze_delay_ms: int
) -> tuple[int, int] | str:
    """Compare the account's state on chain at the solidified block with the ledger's position at
    that block, storing the differences (`drift`): (block, figures that differ), or why it cannot
    be compared yet (the run sends it again, ledger/store/jobruns.py)."""
    found = solid_state(node, account)
    if found is None:
        return "the chain's solidified head moved between the reads of the account"
    block, state = found
    mark = checkpoint_block(conn)
    if mark is None or mark < block:
        # The listener has not sent every block up to there: the ledger cannot describe it yet.
        return f"the ledger is at block {'-' if mark is None else mark}, before the solidified block {block}"
    position = position_at(conn, account, block, unfreeze_delay_ms)
    if position is None:
        return f"the account's positions start after the solidified block {block}"
    return block, record_drift(conn, account, block, chain_figures(state), position_figures(position))


def note_comparison(
    conn: psycopg.Connection,
    account: str,
    run_id: int | None,
    *,
    block: int | None = None,
    differing: int | None = None,
    reason: str | None = None,
) -> None:
    """Per account: the last comparison with the chain (when `block` is given) or the last attempt
    and why it did not compare (`reason`), for the status page (`chain_comparisons`)."""
    compared = block is not None
    conn.execute(
        "INSERT INTO chain_comparisons (account, compared_at, block, differing, attempted_at, reason, run_id)"
        " VALUES (%(a)s, CASE WHEN %(c)s THEN now() END, %(b)s, %(d)s, now(), %(r)s, %(run)s)"
        " ON CONFLICT (account) DO UPDATE SET attempted_at = now(), reason = %(r)s, run_id = %(run)s,"
        " compared_at = CASE WHEN %(c)s THEN now() ELSE chain_comparisons.compared_at END,"
        " block = CASE WHEN %(c)s THEN %(b)s ELSE chain_comparisons.block END,"
        " differing = CASE WHEN %(c)s THEN %(d)s ELSE chain_comparisons.differing END",
        {"a": account, "c": compared, "b": block, "d": differing, "r": reason, "run": run_id},
    )
