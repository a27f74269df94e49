"""The legacy TronGrid path, the fallback, the gray release and shadow mode.

Real PostgreSQL and Redis (cut with TCP proxies in front of them, never stopped), the simulator as
TronGrid, real web processes where the test is about processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from werkzeug.test import TestResponse

from harness.procs import ROOT, Proc
from harness.servers import free_port
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    settings_env,
    start_chain,
    start_simulator,
    start_web,
    start_worker_and_listener,
    wait_until,
)
from harness.tcpproxy import TcpProxy
from ledger.chain.address import to_base58
from ledger.chain.node import INGEST, node_from_settings
from ledger.config import Settings
from ledger.coordination.budget import Priority
from ledger.ops.metrics import Counters, Flusher, metrics_client, read_totals, sum_samples
from ledger.store.db import SQL_DIR, migrate, recreate_database
from ledger.store.rollout import Rollout, bucket, goes_legacy, read_rollout
from web.app import close_app, create_app
from web.directory import PUBLISHED
from web.legacy import record_rows
from web.openapi import build_spec
from web.paths import LEGACY_ERRORS, current_paths, refresh_rollout

FIXTURES = Path(__file__).parent / "fixtures" / "tron"
ADMIN_TOKEN = "test-admin-token-0123456789"


def body(resp: TestResponse) -> Any:
    """The JSON body of a test response (a test fails here, not on a None, if there is none)."""
    assert resp.json is not None, resp.data[:200]
    return resp.json


def address(n: int) -> str:
    return to_base58("41" + f"{n:040x}")


def set_rollout(url: str, *, new: int | None = None, shadow: int | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO rollout (id) VALUES (1) ON CONFLICT DO NOTHING")  # the tests truncate it
        if new is not None:
            conn.execute("UPDATE rollout SET new_percent = %s", (new,))
        if shadow is not None:
            conn.execute("UPDATE rollout SET shadow_percent = %s", (shadow,))


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """TronGrid for the legacy path and the fallback: a paused chain that none of the tests using it
    changes, so one simulator serves the module (its unfreeze delay is the tests' settings')."""
    proc, url = start_simulator(
        "--history-blocks", "150", "--paused", "true", "--solid-lag", "2", "--unfreeze-delay-seconds", "30"
    )
    yield Simulator(url)
    proc.kill()


@contextlib.contextmanager
def app_for(settings: Settings) -> Iterator[Flask]:
    """An app the test closes when done with it: its pools hold PostgreSQL connections."""
    app = create_app(settings)
    try:
        yield app
    finally:
        close_app(app)


def records(client: FlaskClient, kind: str, key: str, **params: Any) -> Any:
    response = client.get(f"/api/{kind}/records", query_string={"pool_account_id": key, **params})
    return response


# -- the legacy path's mapping -------------------------------------------------------------------


def test_a_real_trongrid_record_maps_to_the_native_row_shape() -> None:
    rec = json.loads((FIXTURES / "mainnet_trongrid_v1_tx_freezebalancev2_energy_37a8a1cf.json").read_text())
    owner = to_base58("416e3b44b96104b26f84057974a1f0c9880f7c9b13")
    now = datetime.now(UTC)
    [row] = record_rows(rec, "stake", owner, 30, now)
    assert row == {
        "id": None,
        "tx_id": "37a8a1cf504a1b5d777f23ab5e553b92bc9fca6c56ccf7cd8c9f82a13d9d1af3",
        "op_index": 0,
        "block_num": 65918471,
        "block_time": datetime.fromtimestamp(1728404118, UTC),
        "owner_address": owner,
        "operation_type": "freeze",
        "contract_type": "FreezeBalanceV2Contract",
        "resource": "ENERGY",
        "amount": 1_000_000,
        "status": "confirmed",
    }
    # Another account's list, or another kind of list, does not show it.
    assert list(record_rows(rec, "stake", address(7), 30, now)) == []
    assert list(record_rows(rec, "delegate", owner, 30, now)) == []
    assert list(record_rows(rec, "unfreeze", owner, 30, now)) == []
    # A malformed record is skipped, as the listener skips it.
    assert list(record_rows({"blockNumber": 1, "block_timestamp": 2, "raw_data": "x"}, "stake", owner, 30, now)) == []


def test_the_bucket_is_stable_and_the_percentage_monotonic() -> None:
    # SHA-256, not hash(): the same in every process (PYTHONHASHSEED differs between processes).
    assert bucket("TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre") == bucket("TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre")
    accounts = [address(n) for n in range(1, 501)]
    new_at = {p: {a for a in accounts if not goes_legacy(a, p)} for p in (0, 10, 50, 100)}
    assert new_at[10] <= new_at[50]  # raising the share keeps the accounts already moved
    assert new_at[0] == set() and new_at[100] == set(accounts)
    assert 30 <= len(new_at[10]) <= 70 and 200 <= len(new_at[50]) <= 300
    # The legacy path keeps the buckets below 100 - new: the accounts a legacy share of the same
    # size sent there, so a migrated setting moves no account.
    for legacy in (10, 50, 90):
        assert {a for a in accounts if goes_legacy(a, 100 - legacy)} == {a for a in accounts if bucket(a) < legacy}


@pytest.mark.parametrize(
    ("legacy", "by", "expected"),
    [
        (30, "cli", Rollout(70, 5, set_by_operator=True)),
        (0, "admin API", Rollout(100, 5, set_by_operator=True)),
        (0, None, Rollout(42, 5)),  # never set: ROLLOUT_START_NEW_PERCENT (42 here) decides
    ],
)
def test_the_migration_keeps_an_installs_accounts_on_their_path(
    database_url: str, tmp_path: Path, legacy: int, by: str | None, expected: Rollout
) -> None:
    scratch = make_conninfo(database_url, dbname=f"{conninfo_to_dict(database_url)['dbname']}_rollout_migration")
    before = tmp_path / "sql"
    before.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "015_rollout_new_percent.sql":
            shutil.copy(path, before / path.name)
    recreate_database(scratch)
    try:
        migrate(scratch, before)
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("UPDATE rollout SET legacy_percent = %s, shadow_percent = 5, updated_by = %s", (legacy, by))
        migrate(scratch)
        with psycopg.connect(scratch, autocommit=True) as conn:
            assert read_rollout(conn, 42) == expected
    finally:
        with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(str(conninfo_to_dict(scratch)["dbname"]))
                )
            )
    # The same accounts as before on the legacy path (bucket < legacy_percent).
    accounts = [address(n) for n in range(1, 301)]
    assert {a for a in accounts if goes_legacy(a, expected.new_percent) and expected.set_by_operator} == {
        a for a in accounts if bucket(a) < legacy
    }


# -- fallback ------------------------------------------------------------------------------------


@pytest.fixture
def outage(
    settings: Settings, clean_db: str, redis_clean: object, sim: Simulator
) -> Iterator[tuple[Settings, TcpProxy, TcpProxy]]:
    """Settings whose PostgreSQL and cache Redis go through proxies the test can cut."""
    pg = urlsplit(settings.database_url)
    cache = urlsplit(settings.cache_redis_url)
    pg_proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    cache_proxy = TcpProxy(cache.hostname or "127.0.0.1", cache.port or 6379)
    pg_proxy.open()
    cache_proxy.open()
    proxied = replace(
        settings,
        database_url=settings.database_url.replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{pg_proxy.port}"),
        cache_redis_url=settings.cache_redis_url.replace(
            f"{cache.hostname}:{cache.port}", f"127.0.0.1:{cache_proxy.port}"
        ),
        tron_node_url=sim.url,
        fallback_requests_per_minute=20,  # a burst of 2 answers, then one every 3 s
    )
    yield proxied, pg_proxy, cache_proxy
    pg_proxy.close()
    cache_proxy.close()


def test_database_and_cache_down_answers_from_trongrid_then_503_when_the_budget_is_spent(
    outage: tuple[Settings, TcpProxy, TcpProxy], sim: Simulator
) -> None:
    settings, pg_proxy, cache_proxy = outage
    account = SIM_ACCOUNTS[0]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO pool_accounts (address) VALUES (%s) RETURNING id", (account,)).fetchone()
        assert row is not None
        account_id = row[0]
    with app_for(settings) as app:
        client = app.test_client()
        assert records(client, "stake", account).json["meta"]["source"] == "database"
        wait_published(settings)
        # When PostgreSQL and the cache Redis both go away
        pg_proxy.close()
        cache_proxy.close()
        # Then the records come from the simulator's TronGrid route, marked as the fallback
        truth = sim.truth(account)
        solid = truth["solid"]
        newest = sorted(
            (op for op in truth["operations"] if _stake_row(op, account, solid)),
            key=lambda op: (op["block_num"], op["op_index"]),
        )[-100:]
        answer = records(client, "stake", account, limit=100)
        assert answer.status_code == 200, answer.json
        assert answer.json["meta"] == {"page": 1, "limit": 100, "source": "fallback", "next_cursor": None}
        assert answer.headers["Cache-Control"] == "no-store"
        got = {(r["tx_id"], r["op_index"], r["operation_type"], r["amount"]) for r in answer.json["data"]}
        assert got == {(op["tx_id"], op["op_index"], op["kind"], op["amount"]) for op in newest}
        assert got, "the simulator produced no stake records for the account"
        # An id the process resolved before the outage still maps to its address
        second = records(client, "delegate", str(account_id))
        assert second.status_code == 200 and second.json["meta"]["source"] == "fallback"
        # One that is no pool account's (the published directory says so): 404, as with the database
        unknown = records(client, "stake", str(account_id + 1000))
        assert unknown.status_code == 404 and unknown.json["error"]["code"] == "not_found"
        # And once the fallback's budget is spent (a burst of 2): 503 with Retry-After
        spent = records(client, "unfreeze", account)
        assert spent.status_code == 503
        assert spent.json["error"]["code"] == "fallback_budget_spent"
        assert int(spent.headers["Retry-After"]) >= 1
        # When PostgreSQL is back, the native path answers again, without a restart
        pg_proxy.open()
        wait_until(
            lambda: records(client, "stake", account).json.get("meta", {}).get("source") == "database", 20, "native"
        )


@pytest.mark.slow
def test_fallback_limiter_without_its_redis_limits_each_process(
    outage: tuple[Settings, TcpProxy, TcpProxy],
) -> None:
    settings, pg_proxy, cache_proxy = outage
    # The limiter's Redis is unreachable as well: the process limits itself at the same rate.
    settings = replace(settings, fallback_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (SIM_ACCOUNTS[1],))
    with app_for(settings) as app:
        client = app.test_client()
        wait_published(settings)
        pg_proxy.close()
        cache_proxy.close()
        codes = [records(client, "stake", SIM_ACCOUNTS[1]).status_code for _ in range(4)]
        assert codes == [200, 200, 503, 503]


def test_no_fallback_when_it_is_off(outage: tuple[Settings, TcpProxy, TcpProxy]) -> None:
    settings, pg_proxy, cache_proxy = outage
    with app_for(replace(settings, fallback_requests_per_minute=0)) as app:
        pg_proxy.close()
        cache_proxy.close()
        answer = records(app.test_client(), "stake", SIM_ACCOUNTS[0])
        assert answer.status_code == 503 and answer.json["error"]["code"] == "unavailable"
        assert answer.headers["Retry-After"] == "1"


def _stake_row(op: dict[str, Any], account: str, solid: int) -> bool:
    return (
        op["owner_address"] == account
        and op["kind"] in ("freeze", "unfreeze", "withdraw_expire_unfreeze", "cancel_all_unfreeze")
        and op["block_num"] <= solid
        and op["status"] != "orphaned"
    )


# -- gray release --------------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings, clean_db: str, redis_clean: object, sim: Simulator) -> Iterator[Flask]:
    with app_for(replace(settings, tron_node_url=sim.url, admin_token=ADMIN_TOKEN)) as application:
        yield application


def ledger_cli(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` (`ledger …`, as an operator types it) with the project's console script."""
    argv = shlex.split(command)
    assert argv[0] == "ledger", command
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(argv, env={**env, "PATH": path}, capture_output=True, text=True, timeout=60)


def sources_of(client: FlaskClient, accounts: list[str]) -> dict[str, str]:
    out = {}
    for a in accounts:
        answer = records(client, "stake", a)
        assert answer.status_code == 200, answer.json
        out[a] = answer.json["meta"]["source"]
    return out


@pytest.mark.slow
def test_rollout_set_10_answers_ten_percent_of_accounts_from_the_database_always_the_same(
    app: Flask, settings: Settings, clean_db: str
) -> None:
    accounts = [address(n) for n in range(1, 2001)]
    with psycopg.connect(clean_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO pool_accounts (address) VALUES (%s)", [(a,) for a in accounts])
    env = {**settings_env(settings), "DATABASE_URL": clean_db}
    done = ledger_cli(env, "ledger rollout set 10")
    assert done.returncode == 0, done.stderr
    with app.app_context():
        refresh_rollout(current_paths(), app.extensions["ledger"].pool)
    client = app.test_client()
    sources = sources_of(client, accounts)
    counts = Counter(sources.values())
    assert 170 <= counts["database"] <= 230, counts  # the new path: 10 % ± 3 % of 2,000
    assert counts["legacy"] + counts["database"] == 2000
    # `rollout show` counts the same split
    assert f"pool accounts: {counts['database']} on the new path, {counts['legacy']} on the legacy path" in (
        ledger_cli(env, "ledger rollout show").stdout
    )
    # The same account always goes the same way
    for a in accounts[:300]:
        again = records(client, "stake", a).json["meta"]["source"]
        assert (again == "legacy") == (sources[a] == "legacy"), a


def runbook_commands(heading: str) -> list[str]:
    """The `ledger rollout …` lines of the first sh block under `heading` in docs/OPERATIONS.md, as
    written there (comments stripped): the test runs what the runbook tells an operator to run."""
    text = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = section[section.index("```sh") + len("```sh") : section.index("```", section.index("```sh") + 5)]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("ledger rollout")]


@pytest.mark.slow
def test_the_runbook_steps_10_50_100_and_rollback_do_what_the_plan_says(
    settings: Settings, clean_db: str, redis_clean: object, sim: Simulator
) -> None:
    """A platform cutting over starts with every account on TronGrid (ROLLOUT_START_NEW_PERCENT=0),
    then the runbook's exact commands: after each, every web process answers the share it names
    from the database within ROLLOUT_REFRESH_SECONDS, and the rollback puts every account back."""
    commands = runbook_commands("### Gray release: 10 → 50 → 100, and rollback")
    steps = [c for c in commands if c.startswith(("ledger rollout set", "ledger rollout rollback"))]
    assert steps == [
        "ledger rollout set 10",
        "ledger rollout set 50",
        "ledger rollout set 100",
        "ledger rollout rollback",
    ]
    accounts = [address(n) for n in range(1, 301)]
    with psycopg.connect(clean_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO pool_accounts (address) VALUES (%s)", [(a,) for a in accounts])
    cutting_over = replace(settings, tron_node_url=sim.url, rollout_start_new_percent=0, rollout_refresh_seconds=0.5)
    env = {**settings_env(cutting_over), "DATABASE_URL": clean_db, "TRON_NODE_URL": sim.url}
    with app_for(cutting_over) as app:
        client = app.test_client()
        assert set(sources_of(client, accounts[:20]).values()) == {"legacy"}  # the start: all on TronGrid
        for command in commands:
            done = ledger_cli(env, command)
            assert done.returncode == 0, (command, done.stderr)
            if command == "ledger rollout rollback":
                share = 0
            elif command.startswith("ledger rollout set "):
                share = int(command.split()[-1])
            else:
                continue
            expected = {a: "legacy" if goes_legacy(a, share) else "database" for a in accounts}

            def followed(expected: dict[str, str] = expected) -> bool:
                seen = sources_of(client, accounts)
                return {a: "legacy" if s == "legacy" else "database" for a, s in seen.items()} == expected

            wait_until(followed, 10, f"the web to follow `{command}`")
            on_new = sum(1 for v in expected.values() if v == "database")
            assert abs(on_new - 3 * share) <= 25, (command, on_new)  # about `share` % of 300
            assert f"pool accounts: {on_new} on the new path, {300 - on_new} on the legacy path" in done.stdout
        # The rollback left every account on the legacy path.
        assert set(sources_of(client, accounts).values()) == {"legacy"}


@pytest.mark.slow
def test_admin_api_and_cli_change_the_rollout(app: Flask, settings: Settings, clean_db: str) -> None:
    # With a token the document describes the admin routes (tests/test_contract.py: each one served).
    assert app.test_client().get("/openapi.json").json == build_spec(admin=True)
    accounts = [address(n) for n in range(1, 41)]
    with psycopg.connect(clean_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO pool_accounts (address) VALUES (%s)", [(a,) for a in accounts])
    on_new_at_25 = sum(1 for a in accounts if not goes_legacy(a, 25))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.get("/admin/rollout").status_code == 401
    # A fresh install: the new path answers every account, nobody has set anything.
    shown = body(client.get("/admin/rollout", headers=auth))["data"]
    assert (shown["new_percent"], shown["shadow_percent"], shown["set_by_operator"]) == (100, 0, False)
    assert shown["accounts"] == {"new": 40, "legacy": 0}
    changed = client.put("/admin/rollout", json={"new_percent": 25}, headers=auth)
    assert changed.status_code == 200
    data = body(changed)["data"]
    assert data["new_percent"] == 25 and data["legacy_percent"] == 75 and data["this_process"]["new_percent"] == 25
    assert data["set_by_operator"] and data["accounts"] == {"new": on_new_at_25, "legacy": 40 - on_new_at_25}
    for bad in ({"new_percent": 101}, {"new_percent": "10"}, {"shadow_percent": -1}, {"legacy_percent": 0}, {}):
        answer = client.put("/admin/rollout", json=bad, headers=auth)
        assert answer.status_code == 400, bad
    env = {**settings_env(settings), "DATABASE_URL": clean_db}
    cli = ledger_cli(env, "ledger rollout shadow 5")
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines() == [
        "new 25%\tlegacy 75%\tshadow 5%",
        f"pool accounts: {on_new_at_25} on the new path, {40 - on_new_at_25} on the legacy path",
    ]
    assert ledger_cli(env, "ledger rollout show").stdout == cli.stdout
    rollback = ledger_cli(env, "ledger rollout rollback")
    assert rollback.returncode == 0 and rollback.stdout.splitlines() == [
        "new 0%\tlegacy 100%\tshadow 5%",
        "pool accounts: 0 on the new path, 40 on the legacy path",
    ]
    refused = ledger_cli(env, "ledger rollout set 150")
    assert refused.returncode == 2 and "0 to 100" in refused.stderr


@pytest.mark.slow
def test_rollback_reaches_two_web_processes_within_five_seconds(
    settings: Settings, clean_db: str, redis_clean: object, sim: Simulator, procs: list[Proc]
) -> None:
    account = SIM_ACCOUNTS[0]
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (account,))
    env = {**settings_env(settings), "TRON_NODE_URL": sim.url}
    assert ledger_cli(env, "ledger rollout set 100").returncode == 0
    ports = [free_port(), free_port()]
    for port in ports:
        procs.append(start_web({**env, "PORT": str(port)}, port, workers=1, threads=2))
    urls = [f"http://127.0.0.1:{p}/api/stake/records?pool_account_id={account}" for p in ports]

    def source(url: str) -> str:
        return str(httpx.get(url, timeout=10).json()["meta"]["source"])

    wait_until(lambda: all(source(u) in ("database", "cache") for u in urls), 20, "both processes on the new path")
    # When the operator rolls back
    assert ledger_cli(env, "ledger rollout rollback").returncode == 0
    started = time.monotonic()
    legacy_after: dict[str, float] = {}
    while len(legacy_after) < len(urls) and time.monotonic() - started < 10:
        for u in urls:
            if u not in legacy_after and source(u) == "legacy":
                legacy_after[u] = time.monotonic() - started
        time.sleep(0.05)
    # Then both processes answer the legacy way within 5 s, and stay there
    assert len(legacy_after) == 2 and max(legacy_after.values()) < 5.0, legacy_after
    assert all(source(u) == "legacy" for u in urls for _ in range(10))


# -- shadow mode ---------------------------------------------------------------------------------


def _shadow_counts(client: redis.Redis) -> dict[str, int]:
    totals = read_totals(client)
    return {
        r: int(sum_samples(totals, "ledger_shadow_comparisons_total", [f'result="{r}"']))
        for r in ("match", "mismatch", "error", "dropped")
    }


@pytest.mark.slow
def test_shadow_mode_counts_no_mismatch_on_a_quiet_chain_and_an_injected_difference(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    sim = start_chain(procs, settings, "--block-interval", "0.2", "--history-blocks", "100", "--solid-lag", "2")
    url = sim.url
    env = {**env, "TRON_NODE_URL": url, "START_BLOCK": str(sim.status()["start_block"])}
    procs += start_worker_and_listener(env)
    db = settings.database_url

    def caught_up() -> bool:
        status = sim.status()
        with psycopg.connect(db) as conn:
            row = conn.execute(
                "SELECT c.solid_block, p.persisted_block FROM chain_state c, listener_checkpoint p"
                " WHERE p.name = 'main'"
            ).fetchone()
        return row is not None and row[0] == status["solid"] and (row[1] or 0) >= status["solid"]

    sim.pause()
    sim.produce(3)  # the pending tail becomes solid
    wait_until(caught_up, 90, "the ledger to store every confirmed block")
    app = create_app(replace(settings, tron_node_url=url, queue_name=env["QUEUE_NAME"]))
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        client = app.test_client()
        set_rollout(db, shadow=100)
        with app.app_context():
            refresh_rollout(current_paths(), app.extensions["ledger"].pool)
        # A quiet chain: every comparison agrees
        asked = 0
        for account in SIM_ACCOUNTS:
            for kind in ("stake", "delegate", "unfreeze"):
                assert records(client, kind, account).status_code == 200
                asked += 1
                time.sleep(0.3)  # the queue is small on purpose; do not let samples drop
        wait_until(lambda: sum(_shadow_counts(broker).values()) >= asked, 30, "the comparisons")
        counts = _shadow_counts(broker)
        assert counts == {"match": asked, "mismatch": 0, "error": 0, "dropped": 0}, counts
        # When TronGrid has transactions the ledger never saw (left out of the block feed)
        httpx.post(f"{url}/sim/hidden", json={"rate": 1.0}, timeout=10).raise_for_status()
        sim.produce(10)
        wait_until(caught_up, 60, "the ledger to pass the hidden blocks")
        hidden = httpx.get(f"{url}/sim/hidden", timeout=10).json()["hidden"]
        assert hidden, "nothing was hidden"
        for account in SIM_ACCOUNTS:
            for kind in ("stake", "delegate"):
                assert records(client, kind, account).status_code == 200
                time.sleep(0.3)
        wait_until(lambda: sum(_shadow_counts(broker).values()) >= asked + 6, 30, "the comparisons")
        after = _shadow_counts(broker)
        # Then the difference is counted
        assert after["mismatch"] >= 1, after
        assert after["error"] == 0, after
        # And the status page's data and /metrics show it
        monitor = body(client.get("/api/monitor"))["data"]["gray_release"]
        assert monitor["shadow"]["mismatch"] == after["mismatch"]
        assert monitor["rollout"] == {
            "new_percent": 100,
            "legacy_percent": 0,
            "shadow_percent": 100,
            "set_by_operator": False,
        }
        metrics = client.get("/metrics").get_data(as_text=True)
        assert f'ledger_shadow_comparisons_total{{result="mismatch"}} {float(after["mismatch"])}' in metrics
    finally:
        set_rollout(db, shadow=0)
        broker.close()
        close_app(app)


# -- the external dependency figure --------------------------------------------------------------


def test_trongrid_requests_per_thousand_reads_count_only_what_reads_cause(
    app: Flask, settings: Settings, clean_db: str, sim: Simulator
) -> None:
    client = app.test_client()
    account = SIM_ACCOUNTS[0]
    # Given a listener's polling: 40 node requests for 10 blocks, counted as the listener counts them
    counters = Counters()
    ingest = node_from_settings(
        replace(settings, tron_node_url=sim.url), counters=counters, priority=Priority.LIVE, caller=INGEST
    )
    try:
        for _ in range(40):
            ingest.head_header()
    finally:
        ingest.close()
    counters.inc("ledger_listener_blocks_total", value=10)
    Flusher(counters, metrics_client(settings.redis_url)).start().stop()
    # And 20 native reads, then 5 the legacy path answers
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (account,))
    for _ in range(20):
        assert records(client, "stake", account).status_code == 200
    set_rollout(clean_db, new=0)
    with app.app_context():
        refresh_rollout(current_paths(), app.extensions["ledger"].pool)
    for _ in range(5):
        assert records(client, "stake", account).json["meta"]["source"] == "legacy"

    def figure() -> dict[str, Any]:
        data: dict[str, Any] = body(client.get("/api/monitor"))["data"]["gray_release"]["dependency"]["window"]
        return data

    wait_until(lambda: figure()["api_reads"] >= 25, 10, "the reads to be flushed")
    window = figure()
    # Then the per-1,000-reads figure counts the legacy path's requests, not the listener's
    assert window["api_reads_by_source"] == {"native": 20, "legacy": 5, "fallback": 0}
    legacy = window["requests_by_caller"]["legacy"]
    assert legacy >= 5  # at least one TronGrid page per legacy answer
    assert window["requests_by_caller"]["ingest"] == 40
    assert window["read_requests"] == legacy
    assert window["read_requests_per_1000_reads"] == pytest.approx(legacy * 1000 / 25, rel=1e-3)
    assert window["trongrid_requests"] >= legacy + 40  # every caller's, for the budget
    # The share of reads served without any external call: the 20 native ones of 25
    assert (window["reads_with_external_call"], window["external_calls_avoided"]) == (5, 0.8)
    # The listener's requests are a figure of their own, per block
    assert (window["ingest_requests"], window["ingest_blocks"], window["ingest_requests_per_block"]) == (40, 10, 4.0)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f"ledger_trongrid_requests_per_1000_reads {float(window['read_requests_per_1000_reads'])}" in metrics
    assert "ledger_external_calls_avoided_ratio 0.8" in metrics
    assert "ledger_ingest_node_requests_per_block 4.0" in metrics
    assert (
        'ledger_node_requests_total{caller="legacy",endpoint="/v1/accounts/{address}/transactions",outcome="ok"}'
        in metrics
    )


def test_a_legacy_account_is_answered_natively_when_trongrid_is_down(
    settings: Settings, clean_db: str, redis_clean: object
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with app_for(replace(settings, tron_node_url=dead, legacy_timeout_seconds=1.0)) as app:
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (SIM_ACCOUNTS[0],))
        set_rollout(clean_db, new=0, shadow=100)
        with app.app_context():
            paths = current_paths()
            refresh_rollout(paths, app.extensions["ledger"].pool)
            assert paths.shadow is not None
            assert paths.rollout.new_percent == 0
        answer = records(app.test_client(), "stake", SIM_ACCOUNTS[0])
        assert answer.status_code == 200 and answer.json["meta"]["source"] == "database"


@pytest.mark.slow
def test_the_last_known_rollout_is_kept_while_postgresql_is_away(
    outage: tuple[Settings, TcpProxy, TcpProxy],
) -> None:
    settings, pg_proxy, _ = outage
    with app_for(settings) as app:
        set_rollout(settings.database_url, new=70)
        with app.app_context():
            paths = current_paths()
            refresh_rollout(paths, app.extensions["ledger"].pool)
            assert paths.rollout.new_percent == 70 and paths.rollout_read
            pg_proxy.close()
            refresh_rollout(paths, app.extensions["ledger"].pool)
            assert paths.rollout.new_percent == 70 and not paths.rollout_read
            pg_proxy.open()
            set_rollout(settings.database_url, new=100)
            wait_until(lambda: (refresh_rollout(paths, app.extensions["ledger"].pool), paths.rollout_read)[1], 20, "PG")
            assert paths.rollout.new_percent == 100


def test_the_compatibility_shape_renders_legacy_and_fallback_pages_too(
    outage: tuple[Settings, TcpProxy, TcpProxy],
) -> None:
    settings, pg_proxy, cache_proxy = outage
    account = SIM_ACCOUNTS[0]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, '42')", (account,))
    set_rollout(settings.database_url, new=0)
    with app_for(settings) as app:
        client = app.test_client()
        with app.app_context():
            refresh_rollout(current_paths(), app.extensions["ledger"].pool)
        legacy = client.get("/compat/api/stake/records", query_string={"pool_account_id": "42"})
        assert legacy.status_code == 200 and body(legacy)["meta"]["source"] == "legacy"
        rows = body(legacy)["data"]
        assert rows and all(r["pool_account_id"] == "42" and "tx_hash" in r for r in rows)
        set_rollout(settings.database_url, new=100)
        with app.app_context():
            refresh_rollout(current_paths(), app.extensions["ledger"].pool)
        pg_proxy.close()
        cache_proxy.close()
        fallback = client.get("/compat/api/stake/records", query_string={"pool_account_id": "42"})
        assert fallback.status_code == 200 and body(fallback)["meta"]["source"] == "fallback"
        assert {r["tx_hash"] for r in body(fallback)["data"]} == {r["tx_hash"] for r in body(legacy)["data"]}


@pytest.fixture
def error_sim(procs: list[Proc], settings: Settings) -> Simulator:
    """A node that answers every request with java-tron's HTTP 200 {"Error": ...}."""
    return start_chain(procs, settings, "--history-blocks", "20", "--paused", "true", "--fault-rate", "1",
                       "--faults", "error_key")  # fmt: skip


def test_a_node_error_reply_is_never_a_500(outage: tuple[Settings, TcpProxy, TcpProxy], error_sim: Simulator) -> None:
    settings, pg_proxy, cache_proxy = outage
    settings = replace(settings, tron_node_url=error_sim.url)
    account = SIM_ACCOUNTS[0]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (account,))
    set_rollout(settings.database_url, new=0)
    with app_for(settings) as app:
        client = app.test_client()
        with app.app_context():
            paths = current_paths()
            refresh_rollout(paths, app.extensions["ledger"].pool)
            assert paths.rollout.new_percent == 0
        # The legacy path's node says {"Error": ...}: the native path answers, and it is counted.
        for kind in ("stake", "delegate", "unfreeze"):
            answer = records(client, kind, account)
            assert answer.status_code == 200, answer.data[:300]
            assert body(answer)["meta"]["source"] == "database"
        broker = redis.Redis.from_url(settings.redis_url)
        wait_until(
            lambda: sum_samples(read_totals(broker), LEGACY_ERRORS, ['path="legacy"']) >= 3, 10, "the count's flush"
        )
        assert sum_samples(read_totals(broker), LEGACY_ERRORS, ['path="legacy"']) == 3
        broker.close()
        # With PostgreSQL and the cache down the fallback cannot answer either: 503 saying why.
        pg_proxy.close()
        cache_proxy.close()
        answer = records(client, "unfreeze", account)
        assert answer.status_code == 503, answer.data[:300]
        assert "TronGrid answered with an error" in body(answer)["error"]["message"]
        assert answer.headers["Retry-After"] == "1"


def wait_published(settings: Settings) -> None:
    """Until the app's refresher has published the pool directory (web/directory.py), which it does
    at start, before any request."""
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        wait_until(lambda: bool(broker.exists(PUBLISHED)), 10, "the directory to be published")
    finally:
        broker.close()


def test_the_fallback_answers_for_pool_accounts_only_even_in_a_fresh_process(
    outage: tuple[Settings, TcpProxy, TcpProxy], sim: Simulator
) -> None:
    settings, pg_proxy, cache_proxy = outage
    tracked, untracked = SIM_ACCOUNTS[0], SIM_ACCOUNTS[1]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, '42')", (tracked,))
    with app_for(settings) as app:
        wait_published(settings)
        pg_proxy.close()
        cache_proxy.close()
        client = app.test_client()
        # An address the ledger does not track: 404 as with the database, no TronGrid request.
        answer = records(client, "stake", untracked)
        assert answer.status_code == 404, answer.data[:300]
        assert body(answer)["error"]["code"] == "not_found"
        assert records(client, "stake", "99").status_code == 404
        # A pool account this process never resolved, by address or by id: the fallback answers.
        for key in (tracked, "1"):
            answer = records(client, "stake", key)
            assert answer.status_code == 200, answer.data[:300]
            assert body(answer)["meta"]["source"] == "fallback"
    # A process started during the outage knows the pool accounts too.
    with app_for(replace(settings, fallback_requests_per_minute=600)) as fresh:
        client = fresh.test_client()
        assert records(client, "delegate", untracked).status_code == 404
        answer = records(client, "delegate", tracked)
        assert answer.status_code == 200 and body(answer)["meta"]["source"] == "fallback"
