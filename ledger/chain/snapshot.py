"""Opening positions read from the chain (getaccount, getdelegatedresourceaccountindexv2 and
getdelegatedresourcev2 per receiver), so an account's figures do not depend on the ledger having
seen its whole history (java-tron keeps no per-block state history to ask for later).

The replies carry no block number. They are read from the solidity endpoints, whose state is the
solidified head's, between two reads of that head. If it moved, the blocks in between are read: if
none holds a transaction of the account, nothing it has changed and the state is the one after the
later block; else the reads are made again (a few times). Records after that block are then
replayed on top (ledger.store.positions).
"""

from __future__ import annotations

import logging

import psycopg

from ledger import positions
from ledger.chain.account import DelegatedResource, account_state, parse_delegated_resources
from ledger.chain.node import MAX_BLOCKS_PER_REQUEST, RouteMissing, TronNode, block_number
from ledger.chain.parser import MissingTransactionInfo, parse_block
from ledger.chain.values import address, as_list
from ledger.domain import PENDING
from ledger.positions import Position
from ledger.store.accounting import checkpoint_block
from ledger.store.positions import store_opening

log = logging.getLogger(__name__)

MAX_QUIET_CHECK = 1000  # blocks the head may move during a snapshot before it is read again


class SnapshotError(RuntimeError):
    """The chain's state could not be read at one block."""


def read_opening(node: TronNode, account: str, *, attempts: int = 5, solid: bool = True) -> Position:
    """The account's position as the chain reports it, at a block; SnapshotError if no attempt
    could be pinned to one block."""
    for attempt in range(1, attempts + 1):
        before = _block(node, solid)
        reply = node.account(account, solid=solid)
        index = node.delegated_index(account, solid=solid)
        records: list[DelegatedResource] = []
        for i, receiver in enumerate(as_list(index.get("toAccounts", []), "toAccounts")):
            to = address(receiver, f"toAccounts[{i}]")
            records.extend(parse_delegated_resources(node.delegated_resources(account, to, solid=solid)))
        after = _block(node, solid)
        # Only the account's own transactions change what was read (stake, lots, its delegation
        # records; an expired lock is merged lazily, by its own next delegate or undelegate). So
        # when none is in the blocks the head moved over, every reply describes block `after`.
        if before >= 0 and after >= before and _quiet(node, account, before, after):
            # `{}`: the account is not on chain (yet), so it holds nothing, whatever else was answered.
            return positions.opening(account_state(reply, account), records if reply else [], after)
        log.info(
            "snapshot of %s: it had transactions in blocks %s..%s (attempt %d); reading again",
            account,
            before + 1,
            after,
            attempt,
        )
    raise SnapshotError(f"snapshot of {account}: its state changed during each of {attempts} attempts")


def _quiet(node: TronNode, account: str, before: int, after: int, longest: int = MAX_QUIET_CHECK) -> bool:
    """True if no stake transaction of `account` is in blocks before+1..after."""
    if after - before > longest:
        return False
    for lo in range(before + 1, after + 1, MAX_BLOCKS_PER_REQUEST):
        hi = min(after + 1, lo + MAX_BLOCKS_PER_REQUEST)
        for block in node.blocks(lo, hi):
            # Any stake contract of the account counts, failed ones too (cheaper than telling them apart).
            try:
                parsed = parse_block(block, tracked={account}, infos={}, status=PENDING)
            except MissingTransactionInfo:
                return False  # one of its transactions needs its info: it is there, so not quiet
            if any(op.owner_address == account for op in parsed.operations):
                return False
            if any(issue.tx_id is not None for issue in parsed.issues):
                return False  # a transaction that could not be read might be the account's
    return True


def _block(node: TronNode, solid: bool) -> int:
    if solid:
        return node.solid_block_number()
    return block_number(node.head_header())


def take_snapshot(conn: psycopg.Connection, node: TronNode, account: str, *, solid: bool = True) -> Position:
    """Read the account's opening position from the chain and store it (records after its block
    are applied on top; the folded state is rebuilt)."""
    pos = read_opening(node, account, solid=solid)
    store_opening(conn, account, pos)
    if pos.shortfall:
        log.warning("snapshot of %s at block %s: inconsistent chain figures %s", account, pos.block_num, pos.shortfall)
    return pos


def mark_history(conn: psycopg.Connection, account: str) -> None:
    """The account's positions come from its whole history (a `--since` backfill), not a snapshot:
    an empty opening before every block, so the listener does not take a snapshot of it."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO position_openings (address, block_num, state, source) VALUES (%s, -1, %s, 'history')"
            " ON CONFLICT (address) DO UPDATE SET block_num = -1, state = EXCLUDED.state, source = 'history',"
            " taken_at = now()",
            (account, Position().to_json().decode()),
        )
        conn.execute("DELETE FROM positions WHERE address = %s", (account,))


def accounts_without_opening(conn: psycopg.Connection, accounts: list[str]) -> list[str]:
    rows = conn.execute("SELECT address FROM position_openings WHERE address = ANY(%s)", (accounts,)).fetchall()
    have = {a for (a,) in rows}
    return [a for a in accounts if a not in have]


def snapshot_new_accounts(conn: psycopg.Connection, node: TronNode, accounts: list[str]) -> list[str]:
    """Take the opening of each account that has none (neither a snapshot nor a history mark);
    return those that failed (logged: the listener goes on, `ledger accounts snapshot` retries)."""
    failed: list[str] = []
    todo = accounts_without_opening(conn, accounts)
    for i, account in enumerate(todo):
        try:
            pos = take_snapshot(conn, node, account)
        except RouteMissing as exc:
            # The node has no such API (no solidity node behind it): no account will do better.
            log.error("no opening positions taken: the node does not serve account state (%s)", exc)
            return failed + todo[i:]
        except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
            log.error("snapshot of %s failed: %s: %s", account, exc.__class__.__name__, exc)
            failed.append(account)
        else:
            log.info("opening position of %s taken at block %s", account, pos.block_num)
    return failed


def opening_gap_start(conn: psycopg.Connection, accounts: list[str]) -> int | None:
    """The first block after the oldest snapshot of these accounts, when the main checkpoint is
    past it (or absent): the blocks the listener must (re)read so no record after a snapshot is
    missed. None when there is nothing to read again."""
    row = conn.execute(
        "SELECT min(block_num) FROM position_openings WHERE address = ANY(%s) AND source = 'chain'", (accounts,)
    ).fetchone()
    oldest = row[0] if row else None
    if oldest is None:
        return None
    mark = checkpoint_block(conn)
    if mark is not None and mark <= oldest:
        return None
    return int(oldest) + 1
