"""The summary rendered from the figures stored with the folded state (ledger/store/positions.py
`read_stored`, web/positions.py `stored_view`) against a full recompute (every record replayed from
nothing, the whole state rendered), page after page: across confirmations (folds), a pending tail,
a fork's revert, and chain time passing a lot's expiry and a lock's end."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger.chain.address import to_base58
from ledger.domain import Operation
from ledger.positions import Position, chain_time_ms, replay
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.positions import load_rows, read_stored
from tests.test_persist import ALICE, BOB, CAROL, DAVE, DELAY, block_time_ms, make_op
from web.positions import Summary, read_summary, view
from workers.persist import confirm_blocks, persist_operations, revert_blocks

DELAY_MS = DELAY * 1000
OTHERS = [to_base58("41" + f"{0xAB000000 + i:040x}") for i in range(6)]


def persist(db: psycopg.Connection, *ops: Operation) -> None:
    for op in ops:
        persist_operations(db, [op], unfreeze_delay_seconds=DELAY)


def at_block(db: psycopg.Connection, block: int) -> None:
    """The listener's checkpoint (and so the chain time a summary is read at) at `block`."""
    db.execute(
        "INSERT INTO listener_checkpoint (name, block_num, block_id, block_time_ms) VALUES (%s, %s, 'b', %s)"
        " ON CONFLICT (name) DO UPDATE SET block_num = EXCLUDED.block_num, block_time_ms = EXCLUDED.block_time_ms",
        (MAIN_CHECKPOINT, block, block_time_ms(block)),
    )


def op(kind: str, block: int, tx: int = 0, **fields: Any) -> Operation:
    return make_op(kind, block, tx_index=tx, parent_time_ms=block_time_ms(block - 1), **fields)


def recomputed(db: psycopg.Connection) -> dict[str, Any]:
    """The figures of every live record replayed from nothing, the whole state rendered."""
    pos = replay(Position(), load_rows(db, ALICE, -1), DELAY_MS)
    mark = db.execute("SELECT block_time_ms FROM listener_checkpoint WHERE name = %s", (MAIN_CHECKPOINT,)).fetchone()
    now_ms = chain_time_ms(None if mark is None else int(mark[0]), pos.time_ms)
    figures, next_change, _ = view(pos, now_ms)
    return {"resources": figures, "next_change_ms": next_change, "shortfall": pos.shortfall, "as_of": now_ms}


def paged(db: psycopg.Connection, limit: int) -> list[Summary]:
    pages, after = [], None
    while True:
        page = read_summary(db, ALICE, DELAY_MS, after=after, limit=limit)
        pages.append(page)
        if page.next_key is None:
            return pages
        assert len(pages) < 100, "the pages do not end"
        after = page.next_key


def assert_same_as_recomputed(db: psycopg.Connection, *, stored: bool = True) -> None:
    """Every page equals the recompute but for its receivers, and the pages' receivers put together
    are the recompute's, for page sizes from 1 to all."""
    truth = recomputed(db)
    assert (read_stored(db, ALICE, DELAY_MS, None, 10) is not None) == stored
    for limit in (1, 2, 3, 1000):
        pages = paged(db, limit)
        receivers: dict[str, list[Any]] = {res: [] for res in truth["resources"]}
        for page in pages:
            figures = page.data["resources"]
            assert sum(len(f["delegated"]["receivers"]) for f in figures.values()) <= limit
            for res, fig in figures.items():
                receivers[res] += fig["delegated"]["receivers"]
                for receiver in fig["delegated"]["receivers"]:
                    del receiver["units"]
                fig["delegated"]["receivers"] = truth["resources"][res]["delegated"]["receivers"]
                del fig["units"]
            assert figures == truth["resources"], f"page of {limit}"
            assert (page.next_change_ms, page.shortfall, page.as_of_time_ms) == (
                truth["next_change_ms"],
                truth["shortfall"],
                truth["as_of"],
            )
        assert receivers == {res: truth["resources"][res]["delegated"]["receivers"] for res in receivers}
        assert len(pages) == max(1, -(-sum(len(r) for r in receivers.values()) // limit))


@pytest.fixture
def account(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (ALICE,))


@pytest.mark.usefixtures("account")
def test_stored_figures_equal_a_full_recompute_through_folds_a_fork_and_chain_time(db: psycopg.Connection) -> None:
    persist(
        db,
        op("freeze", 100, amount=100_000),
        op("freeze", 100, 1, amount=50_000, resource="BANDWIDTH"),
        # BOB: locked ENERGY ending at block 105's time, CAROL unlocked, DAVE locked long.
        op("delegate", 101, amount=1000, lock=True, lock_period=5),
        op("delegate", 101, 1, amount=500, receiver_address=CAROL),
        op("delegate", 102, amount=300, lock=True, lock_period=20, resource="BANDWIDTH"),
        op("delegate", 102, 1, amount=700, lock=True, lock_period=40, receiver_address=DAVE),
        op("unfreeze", 103, amount=200),  # a lot expiring at block 112's time
        *(op("delegate", 104, i, amount=10 + i, receiver_address=r) for i, r in enumerate(OTHERS)),
    )
    at_block(db, 104)
    assert_same_as_recomputed(db, stored=False)  # nothing folded yet: the whole state, paged
    confirm_blocks(db, 101, unfreeze_delay_seconds=DELAY)
    assert_same_as_recomputed(db)  # folded through 101, a tail of three blocks
    confirm_blocks(db, 104, unfreeze_delay_seconds=DELAY)
    assert_same_as_recomputed(db)  # no tail

    # A tail touching stored receivers: CAROL undelegates, BOB's ended lock merges on a new lock,
    # one of the others goes to zero (its record disappears), a new receiver appears.
    persist(
        db,
        op("undelegate", 106, amount=200, receiver_address=CAROL),
        op("delegate", 107, amount=50, lock=True, lock_period=100),
        op("undelegate", 107, 1, amount=10, receiver_address=OTHERS[0]),
        op("delegate", 107, 2, amount=5, receiver_address=to_base58("41" + "ac" * 20), resource="BANDWIDTH"),
    )
    at_block(db, 107)
    assert_same_as_recomputed(db)

    # A fork: block 108's records leave the chain (a receiver that only they named, and an undelegate).
    gone = [
        op("delegate", 108, amount=900, receiver_address=to_base58("41" + "ad" * 20)),
        op("undelegate", 108, 1, amount=11, receiver_address=OTHERS[1]),
    ]
    persist(db, *gone)
    at_block(db, 108)
    assert_same_as_recomputed(db)
    revert_blocks(db, [[108, gone[0].block_id]])
    at_block(db, 107)
    assert_same_as_recomputed(db)

    # The folds take the tail in (the stored rows changed, removed and added), then chain time moves
    # past the lot's expiry (block 112) and BANDWIDTH's lock end (block 121) with no write.
    confirm_blocks(db, 107, unfreeze_delay_seconds=DELAY)
    assert_same_as_recomputed(db)
    for block in (111, 112, 113, 120, 121, 122, 141, 142):
        at_block(db, block)
        assert_same_as_recomputed(db)

    # A record below the folded block drops the folded state (and its figures); the next fold
    # writes them all again.
    persist(db, op("delegate", 105, 3, amount=1, receiver_address=OTHERS[2]))
    assert_same_as_recomputed(db, stored=False)
    confirm_blocks(db, 142, unfreeze_delay_seconds=DELAY)
    assert_same_as_recomputed(db)


@pytest.mark.usefixtures("account")
def test_a_page_of_a_state_with_receivers_in_the_tail_only(db: psycopg.Connection) -> None:
    persist(db, op("freeze", 100, amount=10_000))
    confirm_blocks(db, 100, unfreeze_delay_seconds=DELAY)
    persist(db, *(op("delegate", 101, i, amount=100, receiver_address=r) for i, r in enumerate([BOB, *OTHERS])))
    at_block(db, 101)
    assert_same_as_recomputed(db)
    first = read_summary(db, ALICE, DELAY_MS, limit=3)
    assert first.data["resources"]["ENERGY"]["delegated"]["receivers_count"] == 7
    assert first.data["resources"]["ENERGY"]["delegated"]["total"] == 700


@pytest.mark.usefixtures("account")
def test_a_lock_ending_at_the_folded_states_own_time(db: psycopg.Connection) -> None:
    # The lock ends at block 105's time, the time of the last block the fold applies.
    persist(
        db,
        op("freeze", 100, amount=10_000),
        op("delegate", 101, amount=100, lock=True, lock_period=5, receiver_address=CAROL),
        op("freeze", 105, amount=1),
    )
    confirm_blocks(db, 105, unfreeze_delay_seconds=DELAY)
    for block in (105, 106):
        at_block(db, block)
        assert_same_as_recomputed(db)
