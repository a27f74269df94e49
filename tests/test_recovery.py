"""Dead workers and a dead database: orphans, stranded messages, `ledger recover`, the API's 503."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import psycopg
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from psycopg.conninfo import make_conninfo

from harness.procs import Proc, python
from harness.stack import settings_env, wait_until
from harness.tcpproxy import TcpProxy
from ledger.config import Settings
from ledger.coordination.queue import create_broker
from ledger.coordination.recovery import recover_stranded
from tests.test_api import add_account, address, insert_stake
from web.app import close_app, create_app


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def qsettings(settings: Settings, clean_db: str) -> Settings:
    return dataclasses.replace(settings, queue_name=f"rec-{uuid.uuid4().hex[:8]}")


def test_worker_parent_sigkill_leaves_no_orphan(qsettings: Settings, procs: list[Proc]) -> None:
    # Given a worker group of two children
    worker = Proc(
        "worker",
        python("-m", "dramatiq", "workers.main:setup", "--processes", "2", "--threads", "2"),
        settings_env(qsettings),
    )
    procs.append(worker)
    worker.wait_for(r"worker ready", timeout=30)
    wait_until(lambda: len(children(worker.popen.pid)) == 2, 30, "two worker children")
    kids = children(worker.popen.pid)
    # When the parent alone is SIGKILLed
    os.kill(worker.popen.pid, signal.SIGKILL)
    worker.popen.wait(5)
    # Then its children die at once, not left running as orphans
    wait_until(lambda: not any(alive(pid) for pid in kids), 5, "the children to die with their parent")


def redis_broker(url: str) -> RedisBroker:
    broker = create_broker(url)
    assert isinstance(broker, RedisBroker), "these tests read the Redis broker's own structures"
    return broker


def test_recover_puts_back_the_messages_of_a_dead_worker(qsettings: Settings) -> None:
    client = redis.Redis.from_url(qsettings.redis_url)
    producer = redis_broker(qsettings.redis_url)
    queue = qsettings.queue_name
    try:
        for i in range(5):
            producer.enqueue(dramatiq.Message(queue_name=queue, actor_name="x", args=(i,), kwargs={}, options={}))
        # Given a worker that fetched three messages and then died (its heartbeat is old)
        dead = redis_broker(qsettings.redis_url)
        assert len(dead.do_fetch(queue, 3)) == 3
        client.zadd("dramatiq:__heartbeats__", {dead.broker_id: int(time.time() * 1000) - 60_000})
        assert client.llen(f"dramatiq:{queue}") == 2
        # And a live one that holds one (recent heartbeat): it must be left alone
        live = redis_broker(qsettings.redis_url)
        assert len(live.do_fetch(queue, 1)) == 1
        # When the operator runs `ledger recover`
        proc = Proc("recover", python("-m", "ledger", "recover"), settings_env(qsettings))
        assert proc.popen.wait(30) == 0
        # Then the dead worker's three messages are back at the head of the queue, the live one's not
        assert "3 message(s) put back" in proc.output(), proc.output()
        assert client.llen(f"dramatiq:{queue}") == 4
        assert client.scard(f"dramatiq:__acks__.{dead.broker_id}.{queue}") == 0
        assert client.scard(f"dramatiq:__acks__.{live.broker_id}.{queue}") == 1
        assert client.zscore("dramatiq:__heartbeats__", dead.broker_id) is None
        # And the next recovery finds nothing more
        assert recover_stranded(client, timeout=5).messages == 0
    finally:
        producer.flush(queue)
        client.delete(f"dramatiq:__acks__.{live.broker_id}.{queue}")
        client.zrem("dramatiq:__heartbeats__", dead.broker_id, live.broker_id)
        client.close()


@pytest.fixture
def proxied_app(settings: Settings, clean_db: str, redis_clean: object) -> Iterator[tuple[TcpProxy, object]]:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = make_conninfo(settings.database_url, host="127.0.0.1", port=str(proxy.port))
        app = create_app(dataclasses.replace(settings, database_url=url))
        yield proxy, app
        close_app(app)


def test_api_answers_503_within_a_second_when_postgresql_is_down(
    proxied_app: tuple[TcpProxy, object], clean_db: str
) -> None:
    proxy, app = proxied_app
    owner = address(7)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        add_account(conn, owner)
        insert_stake(conn, owner, 100)
    client = app.test_client()  # type: ignore[attr-defined]
    path = f"/api/stake/records?pool_account_id={owner}&limit=5"
    assert client.get(path).status_code == 200
    # When PostgreSQL goes away (open connections dropped, new ones refused)
    proxy.close()
    for _ in range(3):  # the first request (dead pooled connections) and the next ones
        started = time.monotonic()
        response = client.get(path.replace("limit=5", f"limit={11 + _}"))  # not a cached page
        took = time.monotonic() - started
        # Then a clear 503 in the API's error shape, in under a second (was: the pool's 5 s)
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"] == "1"
        assert took < 1.0, took
    # And it answers again once PostgreSQL is back
    proxy.open()
    wait_until(lambda: client.get(path).status_code == 200, 10, "the API to answer again")
