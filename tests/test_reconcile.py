"""Reconciliation end to end: simulator -> listener and workers -> scheduler -> jobs.

The simulator hides some stake transactions from its block feed (only TronGrid's account index
has them) and makes stake by "contract" that only account state shows; the scheduler's gap and
state runs must find them, and nothing twice."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from harness.procs import Proc, python
from harness.stack import SIM_ACCOUNTS, Simulator, start_chain, start_worker_and_listener, wait_until
from harness.truth import Row, assert_ledger_matches_truth, checkpoint, ledger_rows, truth_rows
from ledger.config import Settings
from web.app import close_app, create_app


def _pipeline(settings: Settings, env: dict[str, str], procs: list[Proc], *sim_args: str) -> Simulator:
    sim = start_chain(procs, settings, "--block-interval", "0.3", "--history-blocks", "80", *sim_args)
    env.update(
        {
            "TRON_NODE_URL": sim.url,
            "START_BLOCK": str(sim.status()["start_block"]),
            # The simulator's blocks may carry timestamps ahead of the clock (it makes them faster
            # than every 3 s): the settle time is what the checkpoint/solid bounds make safe here.
            "GAP_SETTLE_SECONDS": "0",
            "GAP_LOOKBACK_SECONDS": str(30 * 86_400),
            "SCHEDULE_GAP_SECONDS": "0",
            "SCHEDULE_STATE_SECONDS": "0",
            "SCHEDULE_LIFECYCLE_SECONDS": "0",
        }
    )
    procs += start_worker_and_listener(env)
    return sim


def _scheduler(env: dict[str, str], procs: list[Proc], **schedules: str) -> Proc:
    proc = Proc("scheduler", python("-m", "scheduler"), {**env, **schedules})
    proc.wait_for(r"active: term", timeout=30)
    procs.append(proc)
    return proc


def _finished_runs(url: str, job: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, result FROM job_runs WHERE job = %s AND finished_at IS NOT NULL ORDER BY id", (job,)
        ).fetchall()
    return [{"id": r[0], "result": r[1]} for r in rows]


def _quiet_head(sim: Simulator, settings: Settings, blocks: int) -> None:
    """Stop the chain's own production, add `blocks` empty blocks (so everything before is below the
    solidified head), and wait for the listener to pass them."""
    sim.pause()
    for _ in range(blocks):
        sim.http.post("/sim/submit", json={"transactions": []}).raise_for_status()
    head = sim.status()["head"]
    wait_until(lambda: checkpoint(settings.database_url) == head, 120, "the listener to reach the head")


@pytest.mark.slow
def test_hidden_transactions_are_recovered_by_the_next_gap_run_and_nothing_twice(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a chain whose block feed leaves out 5% of the stake transactions
    sim = _pipeline(settings, env, procs, "--ops-per-block", "3", "--hide-rate", "0.05")
    wait_until(lambda: checkpoint(settings.database_url) >= sim.status()["head"], 120, "catch-up")
    sim.http.post("/sim/hidden", json={"rate": 0})
    _quiet_head(sim, settings, 25)
    hidden = {h["txID"] for h in sim.http.get("/sim/hidden").json()["hidden"]}
    assert hidden

    # The listener's first attempt has everything but them
    app = create_app(settings.__class__(**{**settings.__dict__, "queue_name": env["QUEUE_NAME"]}))
    client = app.test_client()
    expected_rows = 0
    for account in SIM_ACCOUNTS:
        expected = {row for row in truth_rows(sim, account) if row[0] not in hidden}
        expected_rows += len(expected)

        def landed(account: str = account, expected: set[Row] = expected) -> bool:
            return set(ledger_rows(client, account)) == expected

        wait_until(landed, 60, f"first attempt of {account}")

    # When the scheduler's gap runs go over every pool account
    _scheduler(env, procs, SCHEDULE_GAP_SECONDS="2")
    wait_until(lambda: len(_finished_runs(settings.database_url, "gap")) >= 1, 120, "a finished gap run")

    # Then the ledger equals the truth, each hidden operation recovered once, nothing duplicated
    assert_ledger_matches_truth(settings, sim, env)
    with psycopg.connect(settings.database_url) as conn:
        recovered = {r[0] for r in conn.execute("SELECT tx_id FROM recovered_operations").fetchall()}
        first_count = conn.execute("SELECT count(*) FROM recovered_operations").fetchone()
    assert recovered == hidden
    runs = _finished_runs(settings.database_url, "gap")
    assert sum(int(r["result"].get("recovered", 0)) for r in runs) == first_count[0]  # type: ignore[index]

    # And a later run finds nothing more to recover
    wait_until(lambda: len(_finished_runs(settings.database_url, "gap")) >= len(runs) + 1, 60, "another gap run")
    later = _finished_runs(settings.database_url, "gap")[-1]
    assert int(later["result"].get("recovered", 0)) == 0
    assert_ledger_matches_truth(settings, sim, env)
    close_app(app)


@pytest.mark.slow
def test_a_contract_made_stake_is_drift_after_one_state_run(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a pool account that a contract stakes for: account state only, no transaction in the feed
    sim = _pipeline(settings, env, procs, "--ops-per-block", "1")
    wait_until(lambda: checkpoint(settings.database_url) >= sim.status()["head"], 120, "catch-up")
    sim.pause()
    account = SIM_ACCOUNTS[0]
    made = sim.http.post("/sim/contract-stake", json={"account": account, "resource": "ENERGY", "amount": 7_000_000})
    made.raise_for_status()
    _quiet_head(sim, settings, 25)

    # When one state run goes over the pool accounts
    _scheduler(env, procs, SCHEDULE_STATE_SECONDS="600")
    wait_until(lambda: len(_finished_runs(settings.database_url, "state")) >= 1, 120, "a finished state run")

    # Then the difference is stored with what, how much and since which block, and shown
    run = _finished_runs(settings.database_url, "state")[0]
    assert int(run["result"].get("compared", 0)) == len(SIM_ACCOUNTS), run
    app = create_app(settings.__class__(**{**settings.__dict__, "queue_name": env["QUEUE_NAME"]}))
    client = app.test_client()
    drift = client.get("/api/drift", query_string={"pool_account_id": account}).get_json()["data"]
    energy = [d for d in drift if d["what"] == "staked_v2:ENERGY"]
    assert len(energy) == 1, drift
    assert energy[0]["difference"] == 7_000_000
    assert energy[0]["since_block"] >= made.json()["block"]
    summary = client.get(f"/api/accounts/{account}/summary").get_json()
    assert summary["meta"]["chain_drift"].get("staked_v2:ENERGY") == 7_000_000
    assert summary["meta"]["drift"].get("chain.staked_v2:ENERGY") == 7_000_000  # the earlier, merged name
    # The ledger's own figures for the other accounts agree with the chain (no false drift).
    for other in SIM_ACCOUNTS[1:]:
        assert client.get("/api/drift", query_string={"pool_account_id": other}).get_json()["data"] == []
    close_app(app)
