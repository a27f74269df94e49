"""A fork in the simulator: operation.orphaned events name exactly the records that left the chain.

Every record the simulator's truth lists as orphaned (its transaction is in no canonical block any
more) has an operation.orphaned event on the block it was last in; and every operation.orphaned
event names a block the chain no longer has at that height (its records really left the chain: a
transaction re-packed in the new branch is orphaned on its old block and pending again on the new
one). Nothing else is orphaned."""

from __future__ import annotations

import time

import psycopg
import pytest

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, start_chain, start_listener, start_worker, wait_until
from harness.truth import checkpoint, watermark
from ledger.config import Settings
from ledger.store.events import OPERATION_ORPHANED


@pytest.mark.slow
def test_a_fork_gives_operation_orphaned_for_exactly_the_records_that_left(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given the ledger following a live chain
    sim = start_chain(procs, settings, "--history-blocks", "20", "--ops-per-block", "4", "--block-interval", "0.3")
    run_env = {**env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    procs.append(start_worker(run_env))
    procs.append(start_listener(run_env))
    url = settings.database_url
    wait_until(lambda: checkpoint(url) >= int(sim.status()["head"]) - 1, 60, "the listener at the head")
    # When the chain reorganises a few times, a few blocks deep, while the ledger follows
    for depth in (2, 3, 1, 3):
        time.sleep(1.5)
        assert sim.http.post("/sim/fork", json={"depth": depth}).status_code == 200
    time.sleep(1.5)
    sim.pause()
    head = int(sim.status()["head"])
    wait_until(lambda: checkpoint(url) == head and (watermark(url) or 0) == head, 60, "the ledger at the head")
    # Then: the truth's orphaned operations the ledger had are exactly its orphaned records, each with its event
    truth = sim.truth()["operations"]
    gone = {(op["tx_id"], op["op_index"]) for op in truth if op["status"] == "orphaned"}
    with psycopg.connect(url) as conn:
        stored = {
            (tx, op)
            for tx, op in conn.execute(
                "SELECT tx_id, op_index FROM stake_records WHERE status = 'orphaned'"
                " UNION ALL SELECT tx_id, op_index FROM delegate_records WHERE status = 'orphaned'"
            ).fetchall()
        }
        seen = {
            (tx, op)
            for tx, op in conn.execute(
                "SELECT tx_id, op_index FROM stake_records UNION ALL SELECT tx_id, op_index FROM delegate_records"
            ).fetchall()
        }
        events = conn.execute(
            "SELECT payload->'record'->>'tx_id', (payload->'record'->>'op_index')::int, block_num, payload->>'block_id'"
            " FROM events WHERE type = %s",
            (OPERATION_ORPHANED,),
        ).fetchall()
    # (a block replaced before the listener read it left nothing in the ledger to orphan)
    assert stored, "the forks must orphan some records the ledger had"
    assert stored == gone & seen
    assert stored <= {(tx, op) for tx, op, _, _ in events}
    # And every orphaned event's block is not the chain's block at that height
    canonical: dict[int, str] = {}
    for _, _, number, block_id in events:
        if number not in canonical:
            block = sim.http.post("/wallet/getblockbynum", json={"num": number}).json()
            canonical[number] = block["blockID"]
        assert canonical[number] != block_id, (number, block_id)
    # And no record of a canonical block has one
    live = {(op["tx_id"], op["op_index"], op["block_num"]) for op in truth if op["status"] != "orphaned"}
    assert not {(tx, op, n) for tx, op, n, b in events if canonical[n] == b} & live
    print(f"{len(stored)} records orphaned for good, {len(events)} operation.orphaned events")
    assert len(SIM_ACCOUNTS) == 3
