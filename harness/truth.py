"""The ledger compared with the simulator's truth: every record once, statuses right.

`truth_rows` reads the simulator's ground truth, `ledger_rows` walks the API's pages; the tests and
the benchmarks both judge a run by these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from flask.testing import FlaskClient

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, Simulator, start_chain, start_worker, wait_until
from ledger.config import Settings
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


def solid_block(database_url: str) -> int:
    """The solidified head the ledger knows (chain_state)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT solid_block FROM chain_state WHERE id = 1").fetchone()
        return int(row[0]) if row else -1


def watermark(database_url: str) -> int | None:
    """The persisted watermark beside the checkpoint (ledger/store/accounting.py)."""
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
