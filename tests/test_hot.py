"""web/hot.py: a read answered from this process's memory skips its view, for as long as its page is kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from flask import Flask

from ledger.config import Settings
from tests.clocks import ManualClock
from tests.test_api import ALICE, add_account, get_json, insert_stake, records_url
from web import params
from web.app import close_app, create_app
from web.paths import NATIVE, READ_SAMPLES, RECORDS

LOCAL_TTL = 0.5


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(settings: Settings, clean_db: str, redis_clean: object, clock: ManualClock) -> Iterator[Flask]:
    made = create_app(replace(settings, cache_local_ttl=LOCAL_TTL), clock=clock, sleep=clock.advance)
    try:
        yield made
    finally:
        close_app(made)


def test_a_repeated_read_skips_the_view_until_its_page_leaves_memory(
    app: Flask, clean_db: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        account = add_account(conn, ALICE)
        insert_stake(conn, ALICE, 1)
    calls: list[Any] = []
    resolve = params.require_account

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return resolve(*args, **kwargs)

    monkeypatch.setattr("web.records.require_account", counting)
    counted: list[str] = []
    counters = app.extensions["paths"].counters
    inc = counters.inc

    def counting_reads(name: str, *args: Any, **kwargs: Any) -> None:
        counted.append(name)
        inc(name, *args, **kwargs)

    monkeypatch.setattr(counters, "inc", counting_reads)
    client = app.test_client()
    url = records_url("stake", account, limit=20)
    assert get_json(client, url)["meta"]["source"] == "database"  # a miss: filled
    second = client.get(url)  # a Redis hit, kept in memory: the view ran
    assert len(calls) == 2
    local_hits = app.extensions["ledger"].pages.counters.local_hits
    for _ in range(5):
        again = client.get(url)
        assert again.data == second.data and again.mimetype == "application/json"
        assert again.headers["X-Content-Type-Options"] == "nosniff"  # the after-request hooks ran
    assert len(calls) == 2  # answered in front of the view
    assert app.extensions["ledger"].pages.counters.local_hits == local_hits + 5  # and counted as local hits
    assert counted == [READ_SAMPLES[RECORDS, NATIVE]] * 7  # and as reads, as the view counts them
    assert client.get(records_url("stake", account, limit=10)).status_code == 200
    assert len(calls) == 3  # another query string is another answer

    clock.advance(LOCAL_TTL - 0.01)
    assert client.get(url).data == second.data
    assert len(calls) == 3  # still in memory
    clock.advance(0.01)
    client.get(url)
    assert len(calls) == 4  # the page left memory: so did the answer


def test_nothing_is_kept_without_the_local_cache(settings: Settings, clean_db: str, redis_clean: object) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        account = add_account(conn, ALICE)
        insert_stake(conn, ALICE, 1)
    app = create_app(replace(settings, cache_local_ttl=0.0))
    try:
        client = app.test_client()
        url = records_url("stake", account)
        sources = [get_json(client, url)["meta"]["source"] for _ in range(3)]
        assert sources == ["database", "cache", "cache"]
        assert app.extensions["ledger"].pages.counters.local_hits == 0
    finally:
        close_app(app)
