"""The public monitor routes stay bounded: the shortfall list shows at most SHORTFALL_ROWS accounts (those
with a shortfall first), and the figures are made once per MONITOR_CACHE_SECONDS per process, shared by
every request in that time (/api/monitor, /metrics and the data-health check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from flask import Flask

from ledger.config import Settings
from tests.clocks import ManualClock
from tests.test_api import address
from web.app import close_app, create_app
from web.monitor import SHORTFALL_ROWS

ACCOUNTS = SHORTFALL_ROWS + 50
DRIFTING = (7, 120, ACCOUNTS)  # account numbers with a shortfall, one past the first SHORTFALL_ROWS


@pytest.fixture
def pool_of_accounts(clean_db: str) -> str:
    with psycopg.connect(clean_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pool_accounts (address) VALUES (%s)", [(address(n),) for n in range(1, ACCOUNTS + 1)]
        )
        cur.executemany(
            "INSERT INTO positions (address, block_num, state) VALUES (%s, 10, %s)",
            [(address(n), json.dumps({"d": {"staked_v2:ENERGY": n} if n in DRIFTING else {}})) for n in range(1, 40)]
            + [(address(n), json.dumps({"d": {"staked_v2:ENERGY": n}})) for n in DRIFTING if n >= 40],
        )
    return clean_db


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(settings: Settings, pool_of_accounts: str, redis_clean: object, clock: ManualClock) -> Iterator[Flask]:
    application = create_app(replace(settings, monitor_cache_seconds=30.0), clock=clock, sleep=clock.advance)
    yield application
    close_app(application)


def test_the_shortfall_list_is_bounded_with_short_accounts_first(app: Flask) -> None:
    data = app.test_client().get("/api/monitor").get_json()["data"]
    rows = data["shortfall"]
    assert len(rows) == SHORTFALL_ROWS
    assert [r["account"] for r in rows[:3]] == [address(n) for n in DRIFTING]
    assert all(r["shortfall"] == {} for r in rows[3:])
    assert data["shortfall_accounts"] == {"accounts": ACCOUNTS, "with_shortfall": 3, "listed": SHORTFALL_ROWS}
    # /metrics has every short account's gauge, whatever the list shows.
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert sum(line.startswith("ledger_shortfall_sun{") for line in metrics.splitlines()) == 3


def test_the_figures_are_made_once_per_interval_and_shared(app: Flask, clock: ManualClock) -> None:
    client = app.test_client()

    def generated() -> set[str]:
        made = {client.get("/api/monitor").get_json()["data"]["generated_at"] for _ in range(3)}
        return made | {client.get("/health/tron-data-health").get_json()["generated_at"] for _ in range(3)}

    first = generated()
    assert len(first) == 1, first
    clock.advance(29.99)
    assert generated() == first
    # Once the interval is over, the next request makes the figures again, and they are shared again
    clock.advance(0.01)
    second = generated()
    assert len(second) == 1 and second != first, (first, second)
    # A copy each: what one answer adds (rules, freshness) is not in the shared snapshot.
    with app.app_context():
        from web.monitoring import current_snapshot

        assert "freshness" not in current_snapshot() and "rules" not in current_snapshot()
