"""Dead letters end to end: real workers, every way a message can die, requeue through the CLI and
the admin API, and the admin API's authentication."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import cast

import dramatiq
import psycopg
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from harness.procs import ROOT, Proc, python
from harness.stack import settings_env, wait_until
from ledger.config import Settings
from ledger.coordination.inflight import held_messages
from ledger.coordination.queue import create_broker, operation_message
from ledger.ops.metrics import read_totals, sample
from ledger.store import deadletters as dl
from tests.test_persist import ALICE, make_op
from web.app import close_app, create_app

TOKEN = "s3cret-admin-token"
OK_PERSISTS = sample("ledger_worker_messages_total", {"actor": "persist_operation", "outcome": "ok"})

# A fault injected in PostgreSQL itself: inserting this one operation fails with a retryable error
# (RAISE -> SQLSTATE P0001, not one of the workers' permanent errors) until the trigger is dropped.
FAIL_TX = make_op("freeze", 500).tx_id
_TRIGGER = f"""
CREATE OR REPLACE FUNCTION test_fail_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tx_id = '{FAIL_TX}' THEN RAISE EXCEPTION 'injected failure for %', NEW.tx_id; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_fail_one BEFORE INSERT ON stake_records FOR EACH ROW EXECUTE FUNCTION test_fail_one();
"""


@pytest.fixture
def qsettings(settings: Settings, clean_db: str) -> Settings:
    return dataclasses.replace(settings, queue_name=f"dl_{uuid.uuid4().hex[:8]}", admin_token=TOKEN)


@pytest.fixture
def pg(qsettings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(qsettings.database_url, autocommit=True) as conn:
        yield conn
        conn.execute("DROP TRIGGER IF EXISTS test_fail_one ON stake_records")


@pytest.fixture
def producer(qsettings: Settings) -> Iterator[RedisBroker]:
    broker = create_broker(qsettings.redis_url)
    assert isinstance(broker, RedisBroker)
    yield broker
    broker.flush(qsettings.queue_name)


@pytest.fixture
def admin_app(qsettings: Settings, redis_clean: object) -> Iterator[Flask]:
    app = create_app(qsettings)
    yield app
    close_app(app)


def start(entry: str, settings: Settings, procs: list[Proc], threads: int = 2, **extra: str) -> Proc:
    env = {**settings_env(settings), "dramatiq_worker_timeout": "100", **extra}
    proc = Proc("worker", python("-m", "dramatiq", entry, "--processes", "1", "--threads", str(threads)), env)
    procs.append(proc)
    proc.wait_for(r"worker ready", timeout=30)
    return proc


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "ledger", "dead-letters", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def drained(broker: RedisBroker, queue: str) -> bool:
    return broker.client.hlen(f"dramatiq:{queue}.msgs") + broker.client.hlen(f"dramatiq:{queue}.DQ.msgs") == 0


@pytest.mark.slow
def test_every_dead_message_is_listed_and_requeues_once(
    qsettings: Settings,
    pg: psycopg.Connection,
    producer: RedisBroker,
    admin_app: Flask,
    procs: list[Proc],
) -> None:
    client = admin_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    broker_redis = redis.Redis.from_url(qsettings.redis_url)
    queue = qsettings.queue_name

    # 1. A worker of an older release gets a message for an actor it does not have.
    old = start("tests.old_worker:setup", qsettings, procs)
    unknown_op = make_op("freeze", 400)
    producer.enqueue(operation_message(unknown_op, queue))
    wait_until(lambda: dl.dead_letter_counts(pg)["total"] == 1, 20, "the unknown-actor dead letter")
    dead = sample("ledger_worker_messages_total", {"actor": "persist_operation", "outcome": "dead"})
    wait_until(lambda: read_totals(broker_redis).get(dead) == 1, 10, "the old worker's metrics flush")
    old.kill()

    # 2. The current worker retries a failing operation until its retries are exhausted.
    pg.execute(_TRIGGER)
    worker = start("workers.main:setup", qsettings, procs, LOG_FORMAT="json")
    producer.enqueue(operation_message(make_op("freeze", 500), queue))
    wait_until(lambda: dl.dead_letter_counts(pg)["total"] == 2, 30, "the retries-exhausted dead letter")
    wait_until(lambda: drained(producer, queue), 10, "the queue to drain")
    # One JSON log line says it, with the block, transaction and account.
    line = json.loads(worker.wait_for(r'^\{.*"dead-lettered message.*').group(0))
    assert (line["level"], line["block"], line["tx"], line["account"]) == ("WARNING", 500, FAIL_TX, ALICE)

    # Both are in the list with what an operator needs; the broker holds the same two.
    body = client.get("/admin/dead-letters", headers=auth).get_json()
    letters = {row["reason"]: row for row in body["data"]}
    assert set(letters) == {"unknown_actor", "retries_exhausted"}
    unknown, exhausted = letters["unknown_actor"], letters["retries_exhausted"]
    assert unknown["actor_name"] == "persist_operation" and unknown["attempts"] == 0
    assert unknown["error_type"] == "dramatiq.errors.ActorNotFound"
    assert unknown["args"][0]["tx_id"] == unknown_op.tx_id
    assert exhausted["attempts"] == qsettings.retry_max_retries + 1
    assert exhausted["error_type"] == "psycopg.errors.RaiseException" and "injected failure" in exhausted["error"]
    shown = client.get(f"/admin/dead-letters/{exhausted['id']}", headers=auth).get_json()["data"]
    assert "RaiseException" in shown["traceback"] and "persist_operation" in shown["traceback"]
    assert dl.broker_dead_letter_count(broker_redis, queue) == 2
    # Filters: by actor and by error text.
    assert client.get("/admin/dead-letters?actor=confirm_blocks", headers=auth).get_json()["data"] == []
    only = client.get("/admin/dead-letters?error=injected", headers=auth).get_json()["data"]
    assert [row["id"] for row in only] == [exhausted["id"]]
    # The CLI lists the same two, newest first.
    listed = cli(qsettings, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [str(exhausted["id"]), str(unknown["id"])]

    # Without the token nothing is shown or changed; public routes show counts, never payloads.
    for method, path in (
        ("GET", "/admin/dead-letters"),
        ("GET", f"/admin/dead-letters/{unknown['id']}"),
        ("POST", f"/admin/dead-letters/{unknown['id']}/requeue"),
        ("POST", "/admin/dead-letters/requeue"),
        ("POST", "/admin/dead-letters/purge"),
        ("GET", "/admin/in-flight"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.open(path, method=method, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    public = client.get("/api/dead-letters")
    assert public.get_json()["data"]["total"] == 2
    for text in (unknown_op.tx_id, "injected", "RaiseException", "ActorNotFound", unknown_op.owner_address):
        assert text.encode() not in public.data
        assert text.encode() not in client.get("/api/monitor").data
        assert text.encode() not in client.get("/metrics").data
    assert dl.dead_letter_counts(pg)["total"] == 2  # nothing was requeued or purged by those

    # Requeue: the unknown-actor one through the CLI (a current worker runs now), the other through
    # the admin API once its fault is gone. Each lands once: one more successful persist each.
    pg.execute("DROP TRIGGER test_fail_one ON stake_records")
    ok_before = read_totals(broker_redis).get(OK_PERSISTS, 0)
    requeued = cli(qsettings, "requeue", str(unknown["id"]))
    assert requeued.returncode == 0, requeued.stderr
    response = client.post(f"/admin/dead-letters/{exhausted['id']}/requeue", headers=auth)
    assert response.status_code == 200 and response.get_json()["data"]["requeued"] == [exhausted["message_id"]]
    wait_until(
        lambda: pg.execute("SELECT count(*) FROM stake_records WHERE block_num IN (400, 500)").fetchone() == (2,),
        20,
        "both requeued operations to be stored",
    )
    wait_until(lambda: drained(producer, queue), 10, "the queue to drain")
    wait_until(lambda: read_totals(broker_redis).get(OK_PERSISTS, 0) >= ok_before + 2, 10, "the metrics flush")
    assert read_totals(broker_redis)[OK_PERSISTS] == ok_before + 2
    assert dl.dead_letter_counts(pg)["total"] == 0
    assert dl.broker_dead_letter_count(broker_redis, queue) == 0
    assert client.get("/admin/dead-letters", headers=auth).get_json()["data"] == []

    # /metrics parses and counts the dead and the ok messages.
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    outcomes = {
        (s.labels["actor"], s.labels["outcome"]): s.value
        for s in families["ledger_worker_messages"].samples
        if s.name.endswith("_total")
    }
    assert outcomes[("persist_operation", "dead")] == 2
    assert outcomes[("persist_operation", "retried")] == qsettings.retry_max_retries
    broker_redis.close()


def test_requeue_all_by_actor_purge_and_broker_only_dead_letters(
    qsettings: Settings, pg: psycopg.Connection, producer: RedisBroker, admin_app: Flask
) -> None:
    client = admin_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    queue = qsettings.queue_name
    # Given dead letters of two actors, one of which only the broker knows (its worker could not
    # reach PostgreSQL): put in the XQ the way dispatch.lua's nack does.
    for n, actor in enumerate(("persist_operation", "persist_operation", "confirm_blocks")):
        dl.record_dead_letter(
            pg, message_id=f"m{n}", queue_name=queue, actor_name=actor, args=[n], error_type="E", error="e"
        )
    message = operation_message(make_op("freeze", 700), queue).copy(options={"redis_message_id": "xq-only"})
    producer.client.zadd(f"dramatiq:{queue}.XQ", {"xq-only": 1})
    producer.client.hset(f"dramatiq:{queue}.XQ.msgs", "xq-only", message.encode())

    listed = client.get("/admin/dead-letters?limit=2", headers=auth).get_json()
    assert len(listed["data"]) == 2 and listed["meta"]["next_before_id"] is not None
    assert dl.dead_letter_counts(pg)["by_reason"] == {"retries_exhausted": 3, "unrecorded": 1}

    # Requeue all of one actor: enqueued (retries reset), rows gone, the others stay.
    sent = client.post("/admin/dead-letters/requeue?actor=confirm_blocks", headers=auth).get_json()["data"]
    assert sent["requeued"] == ["m2"]
    ids = [i.decode() for i in cast(list[bytes], producer.client.lrange(f"dramatiq:{queue}", 0, -1))]
    body = json.loads(producer.client.hget(f"dramatiq:{queue}.msgs", ids[0]))  # type: ignore[arg-type]
    assert body["actor_name"] == "confirm_blocks" and "retries" not in body["options"]
    assert dl.dead_letter_counts(pg)["by_actor"] == {"persist_operation": 3}

    # Purge one, then the rest of an actor (broker copies too).
    xq_only = dl.list_dead_letters(pg, error="broker")[0]
    assert client.delete(f"/admin/dead-letters/{xq_only['id']}", headers=auth).get_json()["data"] == {"purged": 1}
    assert producer.client.zcard(f"dramatiq:{queue}.XQ") == 0
    assert client.delete(f"/admin/dead-letters/{xq_only['id']}", headers=auth).status_code == 404
    purged = client.post("/admin/dead-letters/purge?actor=persist_operation", headers=auth).get_json()["data"]
    assert purged == {"purged": 2} and dl.dead_letter_counts(pg)["total"] == 0
    assert client.get("/admin/dead-letters/x", headers=auth).status_code == 400
    assert client.post("/admin/dead-letters/999/requeue", headers=auth).status_code == 404


def test_a_requeue_that_crashes_after_enqueueing_loses_nothing(
    qsettings: Settings, pg: psycopg.Connection, producer: RedisBroker
) -> None:
    # Given a dead letter, when the requeue dies right after the message was enqueued
    dl_id = dl.record_dead_letter(
        pg,
        message_id="m1",
        queue_name=qsettings.queue_name,
        actor_name="persist_operation",
        args=[1],
        error_type="E",
        error="e",
    )

    class Crash(Exception):
        pass

    class CrashAfterEnqueue:
        def enqueue(self, message: dramatiq.Message[object]) -> None:
            producer.enqueue(message)
            raise Crash

    with pytest.raises(Crash):
        dl.requeue_dead_letter(pg, CrashAfterEnqueue(), dl_id)  # type: ignore[arg-type]
    # Then the message is in the queue AND still listed: a duplicate at worst, never a loss.
    assert producer.client.llen(f"dramatiq:{qsettings.queue_name}") == 1
    assert dl.get_dead_letter(pg, dl_id) is not None


def test_admin_api_is_off_without_a_token(settings: Settings, clean_db: str, redis_clean: object) -> None:
    app = create_app(dataclasses.replace(settings, admin_token=""))
    try:
        client = app.test_client()
        for path in ("/admin/dead-letters", "/admin/in-flight"):
            assert client.get(path, headers={"Authorization": "Bearer "}).status_code == 404
        assert client.post("/admin/recover").status_code == 404
    finally:
        close_app(app)


@pytest.mark.slow
def test_messages_held_by_a_dead_worker_are_visible(
    qsettings: Settings, pg: psycopg.Connection, producer: RedisBroker, admin_app: Flask, procs: list[Proc]
) -> None:
    # Given a worker whose only thread is inside an actor (held there by a lock this test owns)
    pg.execute(
        "CREATE OR REPLACE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;"
        " CREATE TRIGGER test_hold BEFORE INSERT ON stake_records FOR EACH ROW EXECUTE FUNCTION test_hold()"
    )
    pg.execute("SELECT pg_advisory_lock(4242)")
    try:
        worker = start("workers.main:setup", qsettings, procs, threads=1)
        op = make_op("freeze", 600)
        message = producer.enqueue(operation_message(op, qsettings.queue_name))
        client = admin_app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def held() -> list[dict[str, object]]:
            data = client.get("/admin/in-flight", headers=auth).get_json()["data"]
            return [m for w in data for m in w["messages"]]

        wait_until(lambda: [m["message_id"] for m in held()] == [message.message_id], 20, "the held message")
        # When the worker dies holding it
        worker.kill()
        worker.popen.wait(10)
        # Then the message is still listed, under a worker whose heartbeat stopped (with a short
        # timeout here: the broker's default is 60 s), by the CLI too.
        wait_until(
            lambda: any(
                not h.alive and h.messages
                for h in held_messages(producer.client, qsettings.queue_name, heartbeat_timeout_ms=300)
            ),
            10,
            "the worker's heartbeat to go stale",
        )
        holds = held_messages(producer.client, qsettings.queue_name, heartbeat_timeout_ms=300)
        stranded = [m for h in holds if not h.alive for m in h.messages]
        assert [(m.actor, m.args) for m in stranded] == [("persist_operation", [op.to_message()])]
        assert figures_in_flight(admin_app) == 1
        out = subprocess.run(
            [sys.executable, "-m", "ledger", "in-flight"],
            cwd=ROOT,
            env={**os.environ, **settings_env(qsettings)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and message.message_id in out.stdout, out
        # And the admin API puts it back in its queue (ledger.coordination.recovery), where the next worker finds it.
        wait_until(
            lambda: any(
                not h["alive"] and h["messages"]
                for h in client.get("/admin/in-flight", headers=auth).get_json()["data"]
            ),
            20,
            "the admin view to see the worker as dead (WORKER_HEARTBEAT_TIMEOUT)",
        )
        recovered = client.post("/admin/recover", headers=auth).get_json()["data"]
        assert recovered["messages"] == 1 and recovered["dead_workers"] >= 1
        assert producer.client.llen(f"dramatiq:{qsettings.queue_name}") == 1
    finally:
        pg.execute("SELECT pg_advisory_unlock(4242)")
        pg.execute("DROP TRIGGER IF EXISTS test_hold ON stake_records")


def figures_in_flight(app: Flask) -> int:
    return int(app.test_client().get("/api/monitor").get_json()["data"]["queues"]["in_flight"])


@pytest.mark.parametrize("case", ["expired", "unknown_actor"])
def test_expired_and_unknown_actor_messages_are_recorded(case: str, settings: Settings, pg: psycopg.Connection) -> None:
    # The same middleware on Dramatiq's in-memory broker and a real worker: an age-limited message
    # that waited too long, and one for an actor nobody declared.
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.middleware import Retries

    from ledger.store.db import create_pool
    from workers.deadletters import DeadLetters

    pool = create_pool(settings.database_url, max_size=2, name="test", autocommit=True)
    broker = StubBroker()
    broker.add_middleware(DeadLetters(pool), before=Retries)
    ran: list[int] = []

    def aged(n: int) -> None:
        ran.append(n)

    actor = dramatiq.actor(actor_name="aged", broker=broker, max_age=1_000, queue_name="q")(aged)
    if case == "expired":
        message = actor.message(7).copy(message_timestamp=int(time.time() * 1000) - 60_000)
    else:
        message = dramatiq.Message(queue_name="q", actor_name="nobody", args=(7,), kwargs={}, options={})
    broker.enqueue(message)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("q", timeout=10_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
        pool.close()
    (row,) = dl.list_dead_letters(pg)
    assert ran == [] and row["reason"] == case and row["args"] == [7] and row["attempts"] == 0
    expected = "dramatiq.middleware.middleware.SkipMessage" if case == "expired" else "dramatiq.errors.ActorNotFound"
    assert row["error_type"] == expected
