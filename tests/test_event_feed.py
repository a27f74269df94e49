"""GET /api/events and /api/events/stream: a reader that resumes from its cursor (or Last-Event-ID)
sees every event once, in order, whatever the order the writers committed in and wherever the
reader stopped (a property test over writers, sequencer runs and readers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.config import Settings
from ledger.store.events import EVENT_TYPES, LOCK_ENDED, WITHDRAWABLE, record_event, sequence
from tests.clocks import ManualClock
from tests.test_persist import ALICE, BOB
from web.app import close_app, create_app


def js(response: Any) -> Any:
    """A test response's JSON body, typed as what the test reads of it."""
    return response.json


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Flask]:
    from tests.conftest import settings_for

    app = create_app(settings_for(database_url, events_stream_seconds=0.05))
    yield app
    close_app(app)


@pytest.fixture
def feed_db(clean_db: str, app: Flask) -> Iterator[str]:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s), (%s)", (ALICE, BOB))
    yield clean_db


def parse_stream(body: bytes) -> list[dict[str, Any]]:
    """The events of an SSE body: id, type and data of each."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            events.append({"id": int(fields["id"]), "type": fields["event"], "data": fields["data"]})
    return events


def test_a_page_and_the_stream_show_the_same_events(feed_db: str, app: Flask) -> None:
    with psycopg.connect(feed_db, autocommit=True) as conn:
        for n in range(5):
            record_event(conn, LOCK_ENDED if n % 2 else WITHDRAWABLE, ALICE if n < 3 else BOB, {"n": n})
        sequence(conn)
    client = app.test_client()
    page = js(client.get("/api/events?limit=3"))
    assert [e["id"] for e in page["data"]] == [1, 2, 3] and page["meta"]["next_cursor"] == 3
    assert page["data"][0] == {**page["data"][0], "type": WITHDRAWABLE, "account": ALICE, "data": {"n": 0}}
    rest = js(client.get("/api/events?after=3"))
    assert [e["id"] for e in rest["data"]] == [4, 5]
    empty = js(client.get("/api/events?after=5"))
    assert empty["data"] == [] and empty["meta"]["next_cursor"] == 5
    assert [e["id"] for e in js(client.get(f"/api/events?account={BOB}"))["data"]] == [4, 5]
    assert [e["id"] for e in js(client.get(f"/api/events?types={LOCK_ENDED}"))["data"]] == [2, 4]
    stream = client.get("/api/events/stream", headers={"Last-Event-ID": "2"})
    assert stream.mimetype == "text/event-stream" and stream.headers["Cache-Control"] == "no-store"
    assert stream.data.startswith(b"retry: ")
    assert [(e["id"], e["type"]) for e in parse_stream(stream.data)] == [
        (3, WITHDRAWABLE),
        (4, LOCK_ENDED),
        (5, WITHDRAWABLE),
    ]
    assert [e["id"] for e in parse_stream(client.get("/api/events/stream?after=1&types=" + LOCK_ENDED).data)] == [2, 4]
    for bad in ("after=x", "types=nope", "types=", "limit=0", "limit=1001", "account=T123"):
        assert client.get(f"/api/events?{bad}").status_code == 400, bad
    assert client.get("/api/events/stream", headers={"Last-Event-ID": "x"}).status_code == 400


def test_streams_beyond_the_per_process_limit_wait_their_turn(feed_db: str, app: Flask) -> None:
    client = app.test_client()
    open_streams = [client.get("/api/events/stream", buffered=False) for _ in range(2)]
    busy = client.get("/api/events/stream")
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    for response in open_streams:
        response.close()  # the server's close() gives the slot back, read or not
    assert client.get("/api/events/stream").status_code == 200


# -- the property --------------------------------------------------------------------------------------

# A step: ("write", account, type, txn) writes an event in open transaction `txn` (0-2);
# ("commit", txn); ("sequence",); ("page", limit); ("stream", events read before the client drops).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from([ALICE, BOB]), st.sampled_from(EVENT_TYPES[:6]), st.integers(0, 2)),
        st.tuples(st.just("commit"), st.integers(0, 2)),
        st.tuples(st.just("sequence")),
        st.tuples(st.just("page"), st.integers(1, 4)),
        st.tuples(st.just("stream"), st.integers(0, 5)),
    ),
    max_size=40,
)
filters = st.tuples(st.sampled_from([None, ALICE]), st.sampled_from([None, (LOCK_ENDED,), (LOCK_ENDED, WITHDRAWABLE)]))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, filter_=filters)
def test_readers_resuming_from_their_cursor_see_every_event_once_in_order(
    feed_db: str, app: Flask, steps: list[tuple[Any, ...]], filter_: tuple[str | None, tuple[str, ...] | None]
) -> None:
    account, types = filter_
    query = "".join([f"&account={account}" if account else "", f"&types={','.join(types)}" if types else ""])
    client: FlaskClient = app.test_client()
    seen: dict[str, list[int]] = {"page": [], "stream": []}
    cursors = {"page": 0, "stream": 0}
    with psycopg.connect(feed_db, autocommit=True) as admin:
        admin.execute("TRUNCATE events RESTART IDENTITY")
        txns = [psycopg.connect(feed_db) for _ in range(3)]
        try:
            for step in [*steps, ("commit", 0), ("commit", 1), ("commit", 2), ("sequence",)]:
                if step[0] == "write":
                    record_event(txns[step[3]], step[2], step[1], {})
                elif step[0] == "commit":
                    txns[step[1]].commit()
                elif step[0] == "sequence":
                    sequence(admin)
                elif step[0] == "page":
                    body = js(client.get(f"/api/events?after={cursors['page']}&limit={step[1]}{query}"))
                    seen["page"] += [e["id"] for e in body["data"]]
                    cursors["page"] = body["meta"]["next_cursor"]
                else:
                    got = parse_stream(
                        client.get(
                            f"/api/events/stream?x=1{query}", headers={"Last-Event-ID": str(cursors["stream"])}
                        ).data
                    )[: step[1]]  # the client drops the connection after this many
                    seen["stream"] += [e["id"] for e in got]
                    if got:
                        cursors["stream"] = got[-1]["id"]
            # Then, reading on to the end from where each stopped
            while True:
                body = js(client.get(f"/api/events?after={cursors['page']}&limit=3{query}"))
                if not body["data"]:
                    break
                seen["page"] += [e["id"] for e in body["data"]]
                cursors["page"] = body["meta"]["next_cursor"]
            got = parse_stream(
                client.get(f"/api/events/stream?x=1{query}", headers={"Last-Event-ID": str(cursors["stream"])}).data
            )
            seen["stream"] += [e["id"] for e in got]
            expected = [
                seq
                for (seq,) in admin.execute(
                    "SELECT seq FROM events WHERE (%(a)s::text IS NULL OR account = %(a)s)"
                    " AND (%(t)s::text[] IS NULL OR type = ANY(%(t)s)) ORDER BY seq",
                    {"a": account, "t": list(types) if types else None},
                ).fetchall()
            ]
        finally:
            for txn in txns:
                txn.close()
    # Every event written is numbered, and each reader saw each matching one once, in order
    assert seen["page"] == expected
    assert seen["stream"] == expected


def test_a_quiet_stream_lasts_its_configured_time_with_a_keepalive_now_and_then(
    feed_db: str, settings: Settings, database_url: str
) -> None:
    clock = ManualClock()
    app = create_app(
        dataclasses.replace(settings, events_stream_seconds=40.0, database_url=database_url),
        clock=clock,
        sleep=clock.advance,
    )
    try:
        started = clock()
        body = app.test_client().get("/api/events/stream").data
        # Polls every STREAM_POLL_SECONDS, a keepalive line every KEEPALIVE_SECONDS (15 s, 30 s), ends at 40 s
        assert clock() - started == 40.0
        assert body == b"retry: 1000\n\n" + b": keepalive\n\n" * 2
    finally:
        close_app(app)
