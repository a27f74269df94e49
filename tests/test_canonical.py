"""A revert never orphans a block the chain still has, and reconciliation restores the records a
revert wrongly orphaned (workers/canonical.py)."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
import redis

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, main_checkpoint, start_chain, start_worker_and_listener, wait_until
from harness.truth import assert_ledger_matches_truth
from ledger.chain.node import NodeUnavailable, node_from_settings
from ledger.config import Settings
from ledger.coordination.budget import Priority
from ledger.coordination.queue import BrokerSink, create_broker
from ledger.store.cache import invalidate_accounts
from tests.test_persist import make_op, persist
from workers import canonical
from workers.lifecycle import run_lifecycle
from workers.persist import revert_blocks

GRACE = 30.0


def _block(num: int, branch: str) -> str:
    return f"{num:016x}" + branch * 24


def _status(conn: psycopg.Connection, block_id: str) -> str:
    row = conn.execute("SELECT status FROM stake_records WHERE block_id = %s", (block_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_the_verdicts_take_the_listener_s_blocks_first_then_the_node(db: psycopg.Connection) -> None:
    # The listener's recent blocks: 100 on branch "ab", 101 on branch "cd"
    db.execute(
        "INSERT INTO recent_blocks (block_num, block_id, parent_hash, term)"
        " VALUES (100, %s, 'p', 1), (101, %s, 'p', 1)",
        (_block(100, "ab"), _block(101, "cd")),
    )
    # An orphaned block a rollback showed replaced
    db.execute(
        "INSERT INTO orphaned_blocks (block_num, block_id, term, checked_at) VALUES (50, %s, 1, now())",
        (_block(50, "ab"),),
    )
    node = {60: _block(60, "ab"), 61: _block(61, "cd"), 62: None}
    asked: list[int] = []

    def block_id_at(num: int) -> str | None:
        asked.append(num)
        if num == 63:
            raise NodeUnavailable("connection refused")
        return node[num]

    verdicts = canonical.classify(
        db,
        [
            (100, _block(100, "ab")),  # the listener's block: on the chain
            (101, _block(101, "ab")),  # the listener passed 101 on another block: off it
            (50, _block(50, "ab")),  # shown replaced before: off it
            (60, _block(60, "ab")),  # the node has it: on the chain
            (61, _block(61, "ab")),  # the node has another block there: off it
            (62, _block(62, "ab")),  # the node has no block there: not known
            (63, _block(63, "ab")),  # the node does not answer: not known
        ],
        block_id_at,
    )
    assert verdicts.on_chain == [(100, _block(100, "ab")), (60, _block(60, "ab"))]
    assert verdicts.off_chain == [(101, _block(101, "ab")), (50, _block(50, "ab")), (61, _block(61, "ab"))]
    assert verdicts.unknown == [(62, _block(62, "ab")), (63, _block(63, "ab"))]
    assert asked == [60, 61, 62, 63]  # the node only where the database cannot tell
    assert canonical.classify(db, [(70, _block(70, "ab"))], None).unknown == [(70, _block(70, "ab"))]


def test_a_revert_skips_a_block_the_listener_records_checked_in_its_transaction(db: psycopg.Connection) -> None:
    kept, gone = make_op("freeze", 100, block_id=_block(100, "ab")), make_op("freeze", 101, block_id=_block(101, "ab"))
    persist(db, kept)
    persist(db, gone)
    db.execute("INSERT INTO recent_blocks (block_num, block_id, parent_hash) VALUES (100, %s, 'p')", (kept.block_id,))
    revert_blocks(db, [[100, kept.block_id], [101, gone.block_id]])
    assert (_status(db, kept.block_id), _status(db, gone.block_id)) == ("pending", "orphaned")
    orphaned = db.execute("SELECT block_id, checked_at IS NOT NULL FROM orphaned_blocks").fetchall()
    assert orphaned == [(gone.block_id, True)]


def test_reconciliation_restores_a_canonical_block_and_keeps_a_replaced_one(db: psycopg.Connection) -> None:
    # Given a chain solidified up to 100, and, as an earlier release's revert left them, two blocks
    # recorded as orphaned without a check: 100 (the chain has it) and 101 (replaced)
    db.execute("UPDATE chain_state SET solid_block = 100")
    failed = make_op("delegate", 100, tx_index=1, block_id=_block(100, "ab"), status="failed", contract_ret="REVERT")
    unfreeze = make_op("unfreeze", 100, tx_index=2, block_id=_block(100, "ab"))
    fine = make_op("freeze", 100, block_id=_block(100, "ab"))
    replaced = make_op("freeze", 101, block_id=_block(101, "ab"))
    for op in (fine, failed, unfreeze, replaced):
        persist(db, op)
    db.execute("UPDATE stake_records SET status = 'pending' WHERE block_num = 100")  # before the confirmation came
    revert_blocks(db, [[100, fine.block_id], [101, replaced.block_id]])
    db.execute("UPDATE orphaned_blocks SET checked_at = NULL, term = NULL")
    lot = "SELECT status FROM unfreeze_records WHERE tx_id = %s"
    assert db.execute(lot, (unfreeze.tx_id,)).fetchone() == ("orphaned",)
    node = {100: _block(100, "ab"), 101: _block(101, "cd")}
    # When reconciliation runs
    counts, touched = canonical.repair_orphans(db, node.get)
    # Then block 100's records are back, with the status their block gives them, and 101's stay orphaned
    assert counts == {
        "orphans_checked": 1,
        "canonical_blocks_restored": 1,
        "canonical_records_restored": 3,
        "orphans_unknown": 0,
    }
    assert touched
    statuses = {str(t): str(st) for t, st in db.execute("SELECT tx_id, status FROM stake_records").fetchall()}
    assert statuses[fine.tx_id] == "confirmed" and statuses[unfreeze.tx_id] == "confirmed"
    assert statuses[replaced.tx_id] == "orphaned"
    assert db.execute("SELECT status FROM delegate_records WHERE tx_id = %s", (failed.tx_id,)).fetchone() == ("failed",)
    assert db.execute(lot, (unfreeze.tx_id,)).fetchone() == ("pending",)
    assert db.execute("SELECT block_num, checked_at IS NOT NULL FROM orphaned_blocks").fetchall() == [(101, True)]
    # And a second run has nothing left to do
    assert canonical.repair_orphans(db, node.get)[0]["canonical_blocks_restored"] == 0


# -- the whole ledger -------------------------------------------------------------------------------

# What a revert_blocks did before workers checked the chain: note the blocks, orphan their pending
# and failed records (and the lots of those), whatever the listener records.
_EARLIER_REVERT = """
WITH noted AS (
    INSERT INTO orphaned_blocks (block_num, block_id)
    SELECT * FROM unnest(%(nums)s::bigint[], %(ids)s::text[]) ON CONFLICT DO NOTHING
), s AS (
    UPDATE stake_records SET status = 'orphaned', updated_at = now()
    WHERE status IN ('pending', 'failed') AND block_id = ANY(%(ids)s)
    RETURNING tx_id, op_index
), lots AS (
    UPDATE unfreeze_records u SET status = 'orphaned', updated_at = now()
    FROM s WHERE u.tx_id = s.tx_id AND u.op_index = s.op_index
    RETURNING u.id
), d AS (
    UPDATE delegate_records SET status = 'orphaned', updated_at = now()
    WHERE status IN ('pending', 'failed') AND block_id = ANY(%(ids)s)
    RETURNING tx_id
)
SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM d)
"""


@pytest.mark.slow
def test_reconciliation_repairs_a_ledger_with_canonical_records_wrongly_orphaned(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a ledger equal to a chain that forked once (its replaced blocks rightly orphaned)
    sim = start_chain(
        procs, settings, "--block-interval", "0.5", "--history-blocks", "80", "--ops-per-block", "3", "--paused"
    )
    env = {**env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    procs += start_worker_and_listener(env)
    wait_until(lambda: main_checkpoint(settings.database_url) == sim.status()["head"], 60, "catch-up")
    sim.http.post("/sim/fork", json={"depth": 3}).raise_for_status()
    sim.produce(30)
    head = sim.status()["head"]
    wait_until(lambda: main_checkpoint(settings.database_url) == head, 60, "the head after the fork")
    assert_ledger_matches_truth(settings, sim, env)
    procs.pop().stop()  # the listener: nothing below may be put right by its passes
    # When a deposed listener of the earlier release had its revert applied: the 25 newest blocks,
    # canonical, recorded as orphaned with their pending records, and no orphaned block checked
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        blocks = conn.execute(
            "SELECT block_num, block_id FROM recent_blocks ORDER BY block_num DESC LIMIT 25"
        ).fetchall()
        nums, ids = [int(n) for n, _ in blocks], [str(b) for _, b in blocks]
        (wrong,) = conn.execute(_EARLIER_REVERT, {"nums": nums, "ids": ids}).fetchone() or (0,)
        conn.execute("UPDATE orphaned_blocks SET checked_at = NULL, term = NULL")
        # ... and the listener's recent blocks pruned below the newest 10 (only the node can tell there)
        conn.execute("DELETE FROM recent_blocks WHERE block_num <= %s", (head - 10,))
        rightly = conn.execute("SELECT count(*) FROM orphaned_blocks").fetchone()
    cache = redis.Redis.from_url(settings.cache_redis_url)
    invalidate_accounts(cache, SIM_ACCOUNTS)  # as the worker did after the revert
    assert wrong > 0 and rightly is not None and rightly[0] > 25
    with pytest.raises(AssertionError):
        assert_ledger_matches_truth(settings, sim, env, timeout=2)
    # When reconciliation runs (the lifecycle job, which the scheduler starts as it takes its lease)
    node = node_from_settings(dataclasses.replace(settings, tron_node_url=sim.url), priority=Priority.BACKGROUND)
    broker = create_broker(settings.effective_broker_url)
    sink = BrokerSink(broker, env["QUEUE_NAME"], threads=1)
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            counts, touched = run_lifecycle(conn, node, sink, grace_seconds=GRACE)
            left = conn.execute("SELECT count(*) FROM orphaned_blocks WHERE checked_at IS NULL").fetchone()
        invalidate_accounts(cache, touched)  # as the lifecycle actor does
    finally:
        sink.close()
        broker.close()
        node.close()
        cache.close()
    # Then it says how many it restored, every canonical record is back, the rightly orphaned stay
    assert counts["canonical_blocks_restored"] == 25
    assert counts["canonical_records_restored"] == wrong
    assert counts["orphans_checked"] == rightly[0] - 25 and counts["orphans_unknown"] == 0
    assert left == (0,)
    assert_ledger_matches_truth(settings, sim, env, timeout=30)
