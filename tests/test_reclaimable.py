"""GET /api/accounts/{a}/reclaimable: delegations whose lock ended (and unlocked ones) with the time
since, and locks ending within the hour, at the chain time of the checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask

from ledger.chain.resources import NetworkTotals
from ledger.config import Settings
from ledger.store.network_totals import record_totals
from tests.test_persist import ALICE, BOB, CAROL, DAVE, block_time_ms, make_op
from web.app import close_app, create_app
from workers.persist import persist_operations

EVE = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"


def js(response: Any) -> Any:
    return response.json


@pytest.fixture
def app(settings: Settings, clean_db: str) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    close_app(app)


def test_lists_what_can_be_taken_back_now_and_within_the_hour(app: Flask, clean_db: str) -> None:
    # Given, at block 200's chain time: a lock to BOB that ended 270 s before, an unlocked
    # delegation to CAROL, a lock to DAVE ending in 2,850 s and one to EVE in 5,850 s
    ops = [
        make_op("freeze", 1, amount=10_000_000_000),
        make_op("delegate", 10, receiver_address=BOB, lock=True, lock_period=100, amount=1_500_000),
        make_op("delegate", 11, receiver_address=CAROL, amount=2_000_000),
        make_op("delegate", 150, receiver_address=DAVE, lock=True, lock_period=1_000, amount=3_000_000),
        make_op("delegate", 151, receiver_address=EVE, lock=True, lock_period=2_000, amount=4_000_000),
    ]
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (ALICE,))
        persist_operations(conn, ops, unfreeze_delay_seconds=30)
        conn.execute(
            "INSERT INTO listener_checkpoint (name, block_num, block_id, block_time_ms) VALUES ('main', 200, 'b', %s)",
            (block_time_ms(200),),
        )
    client = app.test_client()
    body = js(client.get("/api/accounts/1/reclaimable"))
    data = body["data"]
    assert data["as_of_block"] == 200 and data["units_block"] is None
    assert [(e["receiver_address"], e["amount"], e["trx"], e["ended_seconds_ago"]) for e in data["reclaimable"]] == [
        (BOB, 1_500_000, "1.5", 270),
        (CAROL, 2_000_000, "2", None),
    ]
    assert data["reclaimable"][0]["lock_end"] and data["reclaimable"][1]["lock_end"] is None
    assert [(e["receiver_address"], e["ends_in_seconds"]) for e in data["ending_within_hour"]] == [(DAVE, 2_851)]
    assert all(e["units"] is None for e in data["reclaimable"])
    # With the network's totals read, the amounts are in energy too
    with psycopg.connect(clean_db, autocommit=True) as conn:
        record_totals(conn, 190, NetworkTotals(180_000_000_000, 16_307_698_552, 43_200_000_000, 27_908_390_830))
        conn.execute("UPDATE pool_accounts SET label = 'x'")  # any write; the page below is read fresh
    app.extensions["ledger"].pages.client.flushdb()
    data = js(client.get(f"/api/accounts/{ALICE}/reclaimable"))["data"]
    assert data["units_block"] == 190
    assert data["reclaimable"][0]["units"] == int(1.5 * (180_000_000_000 / 16_307_698_552))
    assert client.get("/api/accounts/99/reclaimable").status_code == 404
    assert client.get("/api/accounts/nope/reclaimable").status_code == 400
