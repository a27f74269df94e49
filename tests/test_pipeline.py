"""End to end: simulator -> listener -> Dramatiq workers -> PostgreSQL -> API.

Every process is real and really started; the only stand-in is the simulator for the TRON network.
The checks compare the API's records with the simulator's ground truth: nothing missing, nothing
extra, statuses right.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from ledger.config import Settings
from tests.procs import Proc
from tests.stack import (
    SIM_ACCOUNTS,
    Simulator,
    lose_queued_messages,
    queued,
    start_chain,
    start_listener,
    start_worker,
    wait_until,
)
from web.app import close_app, create_app

Row = tuple[Any, ...]


def truth_rows(sim: Simulator, account: str, lo: int = 0, hi: int | None = None) -> set[Row]:
    """The simulator's operations of `account` as `ledger_rows` gives them; with `lo` and `hi`, only
    those of blocks lo..hi."""
    return {
        (
            op["tx_id"],
            op["op_index"],
            op["block_num"],
            op["kind"],
            op["resource"],
            op["amount"],
            op["receiver_address"],
            op["lock"],
            op["lock_period"],
            op["status"],
        )
        for op in sim.truth(account)["operations"]
        if lo <= op["block_num"] and (hi is None or op["block_num"] <= hi)
    }


def walk(client: FlaskClient, path: str, account: str) -> list[dict[str, Any]]:
    """Every record of a list, page by page through next_cursor."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"pool_account_id": account, "limit": 100}
        if cursor:
            params["cursor"] = cursor
        body = client.get(path, query_string=params).get_json()
        assert body["success"], body
        rows.extend(body["data"])
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            return rows


def ledger_rows(client: FlaskClient, account: str) -> list[Row]:
    """Every stake and delegate record of `account` as `truth_rows` gives the simulator's operations
    (a stake record has no receiver and no lock)."""
    no_delegation = {"receiver_address": None, "lock": False, "lock_period": 0}
    records = [{**r, **no_delegation} for r in walk(client, "/api/stake/records", account)]
    records += walk(client, "/api/delegate/records", account)
    return [
        (
            r["tx_id"],
            r["op_index"],
            r["block_num"],
            r["operation_type"],
            r["resource"],
            r["amount"],
            r["receiver_address"],
            r["lock"],
            r["lock_period"],
            r["status"],
        )
        for r in records
    ]


def checkpoint(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT block_num FROM listener_checkpoint").fetchone()
        return row[0] if row else -1


def watermark(database_url: str) -> int | None:
    """The persisted watermark beside the checkpoint (ledger/accounting.py)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT persisted_block FROM listener_checkpoint").fetchone()
        return row[0] if row else None


def assert_ledger_matches_truth(
    settings: Settings,
    sim: Simulator,
    env: dict[str, str],
    accounts: Sequence[str] = SIM_ACCOUNTS,
    lo: int = 0,
    hi: int | None = None,
    timeout: float = 60,
) -> None:
    """The API's records of each account are the simulator's operations (of blocks lo..hi if given),
    each once, within `timeout` seconds."""
    app = create_app(Settings(**{**settings.__dict__, "queue_name": env["QUEUE_NAME"]}))
    try:
        client = app.test_client()
        for account in accounts:
            expected = truth_rows(sim, account, lo, hi)
            assert expected, f"the simulator produced nothing for {account}"

            def settled(account: str = account, expected: set[Row] = expected) -> bool:
                return set(ledger_rows(client, account)) == expected

            try:
                wait_until(settled, timeout, f"ledger of {account} to equal the simulator's truth")
            except TimeoutError:
                got = set(ledger_rows(client, account))
                missing, extra = sorted(expected - got)[:5], sorted(got - expected)[:5]
                raise AssertionError(f"{account}: missing {missing} extra {extra}") from None
            rows = ledger_rows(client, account)
            assert len(rows) == len(set(rows)), "a record appears twice"
    finally:
        close_app(app)  # its pools hold 4+ connections: 13 callers left ~70 open in one session


def start_long_catch_up(settings: Settings, env: dict[str, str], procs: list[Proc]) -> tuple[Simulator, dict[str, str]]:
    """A paused chain with 1,500 blocks of history and a worker; returns the simulator and the
    environment of a listener that catches up from the first block, checkpointing every 20."""
    sim = start_chain(
        procs, settings, "--block-interval", "0.5", "--history-blocks", "1500", "--ops-per-block", "2", "--paused"
    )
    head = sim.status()["head"]
    env = {**env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(head - 1499), "LISTENER_BATCH_BLOCKS": "20"}
    procs.append(start_worker(env))
    return sim, env


@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)
def test_simulated_chain_lands_in_the_api_exactly(
    settings: Settings, broker_env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a chain with history and live blocks, a worker and a listener from its first block
    sim = start_chain(procs, settings, "--block-interval", "0.2", "--history-blocks", "120", "--ops-per-block", "2")
    first = sim.status()["start_block"]  # the chain's first block: the truth starts there too
    env = {**broker_env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(first)}
    procs.append(start_worker(env))
    procs.append(start_listener(env))
    # When it has caught up and followed the head for a while, then the chain stops
    wait_until(lambda: checkpoint(settings.database_url) >= sim.status()["head"], 90, "catch-up")
    sim.produce(10)
    sim.pause()
    head = sim.status()["head"]
    wait_until(lambda: checkpoint(settings.database_url) == head, 30, "the listener to reach the head")
    # Then the API holds exactly the simulator's operations, with the right statuses
    assert_ledger_matches_truth(settings, sim, env)
    # And the persisted watermark reaches the checkpoint
    wait_until(lambda: watermark(settings.database_url) == head, 30, "the watermark to reach the head")


@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)
def test_a_broker_flush_between_enqueue_and_persist_is_repaired_with_no_operator_action(
    settings: Settings, broker_env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a listener that enqueued a chain's operations and checkpointed past them, no worker yet
    grace = 3.0
    sim = start_chain(procs, settings, "--history-blocks", "150", "--ops-per-block", "2", "--paused")
    head = sim.status()["head"]
    env = {**broker_env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(head - 149), "REPAIR_GRACE_SECONDS": str(grace)}
    listener = start_listener(env)
    procs.append(listener)
    wait_until(lambda: checkpoint(settings.database_url) == head, 60, "the listener to checkpoint the head")
    assert queued(env) > 0
    before = watermark(settings.database_url)
    assert before is None or before < head  # nothing persisted: the watermark stays behind
    # When the broker loses every queued message (a restart without AOF, a failover, a flush)
    lose_queued_messages(env)
    assert queued(env) == 0
    started = time.monotonic()
    procs.append(start_worker(env))
    # Then, with nobody doing anything, the listener re-sends what is missing from its record and
    # the ledger equals the chain: nothing lost, nothing doubled, statuses right
    assert_ledger_matches_truth(settings, sim, env)
    took = time.monotonic() - started
    wait_until(lambda: watermark(settings.database_url) == head, 30, "the watermark to reach the head")
    assert "repair:" in listener.output()
    print(f"repaired in {took:.1f}s after the workers started (grace {grace:g}s)")


def test_listener_killed_mid_catch_up_leaves_no_gap_and_no_duplicate(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a long history and a listener that checkpoints every 20 blocks
    sim, env = start_long_catch_up(settings, env, procs)
    head = sim.status()["head"]
    listener = start_listener(env)
    # When it is killed with SIGKILL mid-catch-up and started again
    wait_until(lambda: checkpoint(settings.database_url) >= head - 1000, 60, "some progress")
    listener.kill()
    listener.popen.wait(10)
    assert checkpoint(settings.database_url) < head
    procs.append(start_listener(env))
    wait_until(lambda: checkpoint(settings.database_url) == head, 120, "the restarted listener to finish")
    # Then nothing is missing and nothing is doubled
    assert_ledger_matches_truth(settings, sim, env)
