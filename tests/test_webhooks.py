"""Webhooks: the signature, the URL guard, subscriptions, the relay, and delivery by real worker
processes to a real local HTTP receiver (harness/receiver.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from harness.procs import ROOT, Proc, python
from harness.receiver import ACCEPTED, Behaviour, Receiver
from harness.stack import settings_env, wait_until
from ledger.config import Settings
from ledger.coordination.queue import create_broker, webhook_message, webhook_queue
from ledger.ops.cli import main as cli
from ledger.store.deadletters import list_dead_letters, requeue_dead_letter
from ledger.store.events import LOCK_ENDED, record_event
from ledger.store.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    WebhookError,
    add_subscription,
    check_url,
    delivery_figures,
    rotate_secret,
    sign,
    verify,
)
from tests.test_persist import ALICE, BOB
from web.app import close_app, create_app
from workers.relay import relay_once
from workers.webhooks import longest_backoff_ms, retries_for

PUBLIC = "93.184.216.34"


def resolver(*addresses: str) -> Callable[[str, int], list[str]]:
    return lambda host, port: list(addresses)


def js(response: Any) -> Any:
    """A test response's JSON body, typed as what the test reads of it."""
    return response.json


# -- signature -------------------------------------------------------------------------------------------


def test_a_signature_verifies_with_either_secret_of_a_rotation_and_nothing_else() -> None:
    body = b'{"id":1}'
    header = sign(body, 1_700_000_000, ["new", "old"])
    assert header.startswith("t=1700000000,v1=") and header.count("v1=") == 2
    assert verify(body, header, "new", now=1_700_000_010)
    assert verify(body, header, "old", now=1_700_000_010)
    assert not verify(body, header, "other", now=1_700_000_010)
    assert not verify(b'{"id":2}', header, "new", now=1_700_000_010)  # the body is signed
    assert not verify(body, header.replace("t=1700000000", "t=1700000001"), "new", now=1_700_000_010)  # and the time
    assert not verify(body, header, "new", now=1_700_000_000 + 301)  # a replay later is refused


def test_the_docs_receiver_verifies_a_signature() -> None:
    """docs/API.md's receiver, run as written, on a request signed by the ledger's code."""
    text = (ROOT / "docs" / "API.md").read_text()
    code = re.search(r"```python\n(# webhook receiver.*?)```", text, re.S)
    assert code, "docs/API.md has the receiver example"
    lines = [line for line in code.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) <= 10, "the receiver is 10 lines at most"
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)
    body = b'{"id":7,"type":"operation.confirmed"}'
    stamp = int(time.time())
    good = {SIGNATURE_HEADER: sign(body, stamp, ["whsec_test"])}
    assert scope["verified"](body, good, "whsec_test")
    assert not scope["verified"](body + b" ", good, "whsec_test")
    assert not scope["verified"](body, {SIGNATURE_HEADER: sign(body, stamp - 600, ["whsec_test"])}, "whsec_test")


# -- URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.0.1", "169.254.169.254", "::1", "fd00::1", "0.0.0.0"]
)
def test_private_and_loopback_addresses_are_refused_unless_allowed(address: str) -> None:
    with pytest.raises(WebhookError, match="not a public address"):
        check_url("https://hooks.example/x", allow_private=False, resolve=resolver(PUBLIC, address))
    assert check_url("https://hooks.example/x", allow_private=True, resolve=resolver(address)) == [address]


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example/x", "https:///x", "https://user:pw@hooks.example/x", "hooks.example/x", "https://h:99999/"],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(WebhookError):
        check_url(url, allow_private=True, resolve=resolver(PUBLIC))


def test_a_public_url_passes() -> None:
    assert check_url("https://hooks.example:8443/x?y=1", allow_private=False, resolve=resolver(PUBLIC)) == [PUBLIC]


# -- retries ---------------------------------------------------------------------------------------------


def test_the_default_retries_span_at_least_24_hours_at_their_shortest() -> None:
    settings = Settings()
    n = retries_for(
        settings.webhook_retry_hours * 3_600_000, settings.webhook_min_backoff_ms, settings.webhook_max_backoff_ms
    )
    shortest = sum(min(settings.webhook_min_backoff_ms * 2**k, settings.webhook_max_backoff_ms / 2) for k in range(n))
    assert shortest >= 24 * 3_600_000
    assert sum(min(10_000 * 2**k, 1_800_000) for k in range(n - 1)) < 24 * 3_600_000  # the fewest that do
    assert longest_backoff_ms(0, 10_000, 3_600_000) == 20_000
    assert longest_backoff_ms(40, 10_000, 3_600_000) == 3_600_000


# -- subscriptions and the relay -------------------------------------------------------------------------


@pytest.fixture
def wsettings(settings: Settings, clean_db: str, redis_clean: object, request: pytest.FixtureRequest) -> Settings:
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    return dataclasses.replace(settings, queue_name=f"t_{name}_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def broker(wsettings: Settings) -> Iterator[dramatiq.Broker]:
    b = create_broker(wsettings.redis_url)
    yield b
    b.flush(webhook_queue(wsettings.queue_name))
    b.close()


@pytest.fixture
def pg(wsettings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(wsettings.database_url, autocommit=True) as conn:
        yield conn


def queued(broker: Any, queue: str) -> int:
    return int(broker.client.llen(f"dramatiq:{queue}"))


def test_subscriptions_refuse_unknown_types_and_bad_accounts(pg: psycopg.Connection) -> None:
    with pytest.raises(WebhookError, match="unknown event type"):
        add_subscription(pg, "http://127.0.0.1:1/", types=["operation.nope"], allow_private=True)
    with pytest.raises(WebhookError, match="not a base58"):
        add_subscription(pg, "http://127.0.0.1:1/", accounts=["TNOPE"], allow_private=True)
    with pytest.raises(WebhookError, match="not a public address"):
        add_subscription(pg, "http://127.0.0.1:1/", allow_private=False)


def test_the_relay_hands_each_matching_event_to_each_subscription_once(
    wsettings: Settings, broker: Any, pg: psycopg.Connection
) -> None:
    # Given events before any subscription, then two subscriptions, then more events
    record_event(pg, LOCK_ENDED, ALICE, {"n": 0})
    relay_once(pg, broker, wsettings, due_seconds=60)
    every, _ = add_subscription(pg, "http://127.0.0.1:1/a", allow_private=True)
    bobs, _ = add_subscription(pg, "http://127.0.0.1:1/b", accounts=[BOB], types=[LOCK_ENDED], allow_private=True)
    for n, account in enumerate([ALICE, BOB, BOB], start=1):
        record_event(pg, LOCK_ENDED, account, {"n": n})
    # When the relay passes, twice
    first = relay_once(pg, broker, wsettings, due_seconds=60)
    second = relay_once(pg, broker, wsettings, due_seconds=60)
    # Then each subscription got a delivery per matching event written after it, once
    assert first.ran and first.sequenced == 3 and first.per_subscription == {every.id: 3, bobs.id: 2}
    assert second.enqueued == 0
    assert queued(broker, webhook_queue(wsettings.queue_name)) == 5
    rows = pg.execute("SELECT subscription_id, event_seq FROM webhook_deliveries ORDER BY 1, 2").fetchall()
    assert rows == [(every.id, 2), (every.id, 3), (every.id, 4), (bobs.id, 3), (bobs.id, 4)]
    assert delivery_figures(pg)["pending"] == 5


def test_a_delivery_whose_message_was_lost_is_sent_again_when_overdue(
    wsettings: Settings, broker: Any, pg: psycopg.Connection
) -> None:
    sub, _ = add_subscription(pg, "http://127.0.0.1:1/a", allow_private=True)
    record_event(pg, LOCK_ENDED, ALICE, {})
    relay_once(pg, broker, wsettings, due_seconds=0.2)
    queue = webhook_queue(wsettings.queue_name)
    broker.flush(queue)  # the broker lost it
    assert relay_once(pg, broker, wsettings, due_seconds=0.2).resent == 0  # not overdue yet
    pg.execute("UPDATE webhook_deliveries SET due_at = due_at - interval '0.2 s'")  # 0.2 s later, on its clock
    assert relay_once(pg, broker, wsettings, due_seconds=60).resent == 1
    assert queued(broker, queue) == 1
    assert relay_once(pg, broker, wsettings, due_seconds=60).resent == 0  # due again in 60 s
    assert sub.id


# -- delivery by a real worker ---------------------------------------------------------------------------


@pytest.fixture
def worker(wsettings: Settings) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(**env: str) -> Proc:
        proc = Proc(
            "worker",
            python("-m", "dramatiq", "workers.main:setup", "--processes", "1", "--threads", "4"),
            {**settings_env(wsettings), "dramatiq_worker_timeout": "100", "EVENTS_RELAY_SECONDS": "0.05", **env},
        )
        procs.append(proc)
        proc.wait_for(r"worker ready", timeout=20)
        return proc

    yield start
    for proc in procs:
        proc.kill()


def accepted_ids(receiver: Receiver) -> list[int]:
    return [int(r.headers[EVENT_ID_HEADER]) for r in receiver.snapshot() if r.outcome == ACCEPTED]


@pytest.mark.slow
def test_events_are_delivered_signed_and_retried_past_errors(
    wsettings: Settings, broker: Any, pg: psycopg.Connection, worker: Callable[..., Proc]
) -> None:
    # Given a receiver that refuses a third of the requests, and a subscription to it
    receiver = Receiver(Behaviour(error_rate=0.3, seed=3))
    try:
        sub, secret = add_subscription(pg, receiver.url, allow_private=True)
        worker()
        # When events are written
        for n in range(20):
            record_event(pg, LOCK_ENDED, ALICE, {"n": n})
        # Then each is delivered once, signed with the subscription's secret, its id in the headers
        wait_until(lambda: len(accepted_ids(receiver)) >= 20, 30, "20 deliveries")
        assert sorted(accepted_ids(receiver)) == list(range(1, 21))
        receipts = receiver.snapshot()
        assert any(r.outcome != ACCEPTED for r in receipts)  # some were refused, and sent again
        for r in receipts:
            assert verify(r.body, r.headers[SIGNATURE_HEADER], secret, now=time.time())
            event = json.loads(r.body)
            assert event["id"] == int(r.headers[EVENT_ID_HEADER]) == int(r.headers["Idempotency-Key"])
            assert event["type"] == LOCK_ENDED and event["account"] == ALICE
        wait_until(lambda: delivery_figures(pg)["pending"] == 0, 10, "no delivery pending")
        assert pg.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").fetchone() == (20,)
        assert sub.id
        # And the figures say so, in /metrics and in the status page's data
        refused = sum(r.outcome != ACCEPTED for r in receipts)
        app = create_app(wsettings)
        try:
            client = app.test_client()
            wait_until(
                lambda: js(client.get("/api/monitor"))["data"]["webhooks"]["sent"] == 20, 10, "the pushed counters"
            )
            figures = js(client.get("/api/monitor"))["data"]["webhooks"]
            assert figures == {**figures, "sent": 20, "failed": refused, "pending": 0, "dead": 0}
            assert figures["oldest_undelivered_s"] is None
            text = client.get("/metrics").get_data(as_text=True)
            assert 'ledger_webhook_deliveries_total{result="sent"} 20.0' in text
            assert f'ledger_webhook_deliveries_total{{result="failed"}} {float(refused)}' in text
            assert 'ledger_webhook_deliveries_open{state="pending"} 0.0' in text
            assert "ledger_webhook_oldest_undelivered_seconds 0.0" in text
            assert 'id="wh-sent"' in client.get("/status").get_data(as_text=True)  # the status page's panel
        finally:
            close_app(app)
    finally:
        receiver.stop()


@pytest.mark.slow
def test_a_delivery_that_keeps_failing_is_dead_lettered_and_the_requeue_delivers_it(
    wsettings: Settings, broker: Any, pg: psycopg.Connection, worker: Callable[..., Proc]
) -> None:
    # Given a receiver that is down, and retries that give up after about a second
    receiver = Receiver()
    receiver.stop()
    add_subscription(pg, receiver.url, allow_private=True)
    worker(WEBHOOK_RETRY_HOURS=str(1 / 3600), WEBHOOK_MIN_BACKOFF_MS="50", WEBHOOK_MAX_BACKOFF_MS="200")
    record_event(pg, LOCK_ENDED, ALICE, {})
    # When the retries are spent: the delivery is dead, and so is its message
    wait_until(lambda: delivery_figures(pg)["dead"] == 1, 30, "a dead delivery")
    wait_until(lambda: bool(list_dead_letters(pg)), 10, "the dead letter")
    dead = list_dead_letters(pg)
    assert dead[0]["actor_name"].startswith("deliver_webhook") and dead[0]["reason"] == "retries_exhausted"
    # And once the receiver is back, the dead-letter requeue delivers it
    receiver.start()
    try:
        assert requeue_dead_letter(pg, broker, dead[0]["id"])
        wait_until(lambda: accepted_ids(receiver) == [1], 20, "the requeued delivery")
        wait_until(lambda: delivery_figures(pg)["dead"] == 0, 10, "the delivery no longer dead")
    finally:
        receiver.stop()


def test_a_disabled_subscription_waits_and_delivers_when_enabled(
    wsettings: Settings,
    broker: Any,
    pg: psycopg.Connection,
    worker: Callable[..., Proc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = Receiver()
    try:
        sub, _ = add_subscription(pg, receiver.url, allow_private=True)
        monkeypatch.setenv("DATABASE_URL", wsettings.database_url)
        assert cli(["webhooks", "disable", str(sub.id)]) == 0
        worker()
        record_event(pg, LOCK_ENDED, ALICE, {})
        wait_until(lambda: pg.execute("SELECT seq FROM events").fetchone() != (None,), 10, "the event numbered")
        time.sleep(1.0)
        assert receiver.snapshot() == []
        assert cli(["webhooks", "enable", str(sub.id)]) == 0
        wait_until(lambda: accepted_ids(receiver) == [1], 20, "the delivery after enabling")
    finally:
        receiver.stop()


# -- CLI and admin API -----------------------------------------------------------------------------------


def test_cli_adds_lists_rotates_and_removes(
    wsettings: Settings, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", wsettings.database_url)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    assert cli(["webhooks", "add", "http://127.0.0.1:9/h", "--types", LOCK_ENDED, "--accounts", ALICE]) == 0
    sub_id, secret = capsys.readouterr().out.split()
    assert secret.startswith("whsec_")
    assert cli(["webhooks", "list"]) == 0
    assert f"{sub_id}\tenabled\thttp://127.0.0.1:9/h\t{LOCK_ENDED}\t{ALICE}" in capsys.readouterr().out
    assert cli(["webhooks", "rotate-secret", sub_id]) == 0
    new = capsys.readouterr().out.strip()
    assert new != secret
    assert pg.execute("SELECT previous_secret FROM webhook_subscriptions").fetchone() == (secret,)
    assert cli(["webhooks", "remove", sub_id]) == 0
    assert cli(["webhooks", "remove", sub_id]) == 1
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "0")
    assert cli(["webhooks", "add", "http://127.0.0.1:9/h"]) == 2
    assert rotate_secret(pg, 999) is None


@pytest.fixture
def admin_app(wsettings: Settings) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(wsettings, admin_token="t0ken"))
    yield app
    close_app(app)


def test_admin_api_manages_subscriptions(admin_app: Flask, pg: psycopg.Connection) -> None:
    client = admin_app.test_client()
    auth = {"Authorization": "Bearer t0ken"}
    assert client.get("/admin/webhooks").status_code == 401
    made = client.post("/admin/webhooks", json={"url": "http://127.0.0.1:9/h", "types": [LOCK_ENDED]}, headers=auth)
    assert made.status_code == 201, made.json
    sub = js(made)["data"]
    assert sub["secret"].startswith("whsec_") and sub["types"] == [LOCK_ENDED] and sub["enabled"]
    listed = js(client.get("/admin/webhooks", headers=auth))
    assert [s["id"] for s in listed["data"]] == [sub["id"]] and "secret" not in listed["data"][0]
    assert listed["meta"]["deliveries"]["pending"] == 0
    assert js(client.post(f"/admin/webhooks/{sub['id']}/disable", headers=auth))["data"]["enabled"] is False
    assert js(client.post(f"/admin/webhooks/{sub['id']}/enable", headers=auth))["data"]["enabled"] is True
    rotated = client.post(f"/admin/webhooks/{sub['id']}/rotate-secret", json={"overlap_hours": 1}, headers=auth)
    assert js(rotated)["data"]["secret"] != sub["secret"]
    for bad in ({"url": "ftp://x/"}, {"url": "http://127.0.0.1/", "types": ["x"]}, {"nope": 1}, {"url": 5}):
        assert client.post("/admin/webhooks", json=bad, headers=auth).status_code == 400, bad
    assert client.delete(f"/admin/webhooks/{sub['id']}", headers=auth).status_code == 200
    assert client.delete(f"/admin/webhooks/{sub['id']}", headers=auth).status_code == 404
    assert client.post("/admin/webhooks/x/enable", headers=auth).status_code == 400


def test_the_webhook_queue_depth_is_in_the_metrics_apart_from_the_ledgers_queues(
    settings: Settings, clean_db: str, redis_clean: object
) -> None:
    # Given two delivery messages waiting in the webhook queue (no worker takes them)
    queue = f"wq-{uuid.uuid4().hex[:8]}"
    broker = create_broker(settings.redis_url)
    try:
        for event_id in (1, 2):
            broker.enqueue(webhook_message(1, event_id, queue))
    finally:
        broker.close()
    app = create_app(dataclasses.replace(settings, queue_name=queue))
    try:
        client = app.test_client()
        # Then /metrics and the monitor's data count them in the webhook queue, and not among the
        # ledger's own queues' messages
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
        depth = {s.labels["state"]: s.value for s in families["ledger_webhook_queue_messages"].samples}
        assert depth == {"ready": 2.0, "delayed": 0.0, "in_flight": 0.0, "dead": 0.0}
        assert {s.labels["state"]: s.value for s in families["ledger_queue_messages"].samples}["ready"] == 0.0
        queues = js(client.get("/api/monitor"))["data"]["queues"]
        assert (queues["webhooks"]["ready"], queues["ready"]) == (2, 0)
    finally:
        close_app(app)
