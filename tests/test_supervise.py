"""The run command's process manager: supervisord generated from a Procfile (ledger.ops.procfile).

A crash is not an outage: the killed process comes back, the others keep serving, and a worker
child's stranded messages are persisted within seconds.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import psycopg
import pytest
import redis
from psycopg.conninfo import make_conninfo

from harness.procs import ROOT, Proc
from harness.servers import free_port
from harness.stack import settings_env, start_simulator, wait_until
from harness.supervise import Supervisor
from harness.tcpproxy import TcpProxy
from ledger.config import Settings
from ledger.coordination.queue import create_broker, operation_message
from ledger.ops.procfile import parse_procfile, supervisord_conf, systemd_units
from tests.test_persist import make_op
from tests.test_recovery import alive, children


@pytest.fixture
def qsettings(settings: Settings, clean_db: str, redis_clean: object) -> Settings:
    return dataclasses.replace(settings, queue_name=f"sup-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for sup in started:
        sup.kill()  # the test is over; graceful stops are scripts/run's test (tests/test_run.py)


def test_procfile_to_configs() -> None:
    procs = parse_procfile("# comment\nweb: granian --port $PORT\n\nworker: dramatiq a:b --processes 2\n")
    assert [p.name for p in procs] == ["web", "worker"]
    conf = supervisord_conf(procs, workdir=Path("/srv/x"), rundir=Path("/tmp/r"))
    assert "command=/bin/sh -c 'exec granian --port $PORT'" in conf
    assert conf.count("autorestart=true") == 2 and conf.count("killasgroup=true") == 2
    units = systemd_units(procs)
    assert set(units) == {"ledger.target", "ledger-web.service", "ledger-worker.service"}
    assert "Restart=always" in units["ledger-worker.service"]
    # SIGTERM to the main process alone (dramatiq stops its children), SIGKILL to the group later.
    assert "KillMode=mixed" in units["ledger-worker.service"]
    assert conf.count("stopasgroup=false") == 2
    with pytest.raises(ValueError):
        parse_procfile("web granian\n")


def test_committed_systemd_units_are_the_procfiles() -> None:
    # docs/deploy/systemd once lacked the scheduler's unit, added to the Procfile after it was made.
    want = systemd_units(parse_procfile((ROOT / "Procfile").read_text()))
    have = {p.name: p.read_text() for p in (ROOT / "docs" / "deploy" / "systemd").iterdir()}
    assert have == want, "regenerate: ledger procfile systemd Procfile --dir docs/deploy/systemd"


@pytest.mark.slow
def test_killed_process_comes_back_and_the_others_keep_serving(
    qsettings: Settings, procs: list[Proc], supervisors: list[Supervisor], tmp_path: Path
) -> None:
    # Given the three processes of the Procfile under the run command's supervisor
    sim_proc, url = start_simulator("--block-interval", "0.3", "--history-blocks", "20")
    procs.append(sim_proc)
    port = free_port()
    env = {**settings_env(qsettings), "TRON_NODE_URL": url, "PORT": str(port), "POLL_INTERVAL": "0.2"}
    procfile = (ROOT / "Procfile").read_text().replace("--host 0.0.0.0", "--host 127.0.0.1")
    sup = Supervisor(procfile, tmp_path / "run", env)
    supervisors.append(sup)
    pids = {name: sup.running(name) for name in ("web", "listener", "worker")}
    health = f"http://127.0.0.1:{port}/health/live"
    wait_until(lambda: answers(health), 30, "the web to answer")
    sup.proc.wait_for(r"success: listener entered RUNNING state", timeout=30)
    # When the listener is SIGKILLed
    os_kill(pids["listener"])
    # Then the web answers all along, the listener is started again, the others keep their pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert httpx.get(health, timeout=2).status_code == 200
        now = sup.pid("listener")
        if now and now != pids["listener"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the listener was not restarted")
    assert sup.pid("web") == pids["web"] and sup.pid("worker") == pids["worker"]
    sup.proc.wait_for(r"exited: listener \(terminated by SIGKILL", timeout=5)
    sup.proc.wait_for(r"spawned: 'listener'", timeout=5)


@pytest.mark.slow
def test_worker_child_sigkill_messages_are_persisted_within_15_s(
    qsettings: Settings, supervisors: list[Supervisor], tmp_path: Path
) -> None:
    client = redis.Redis.from_url(qsettings.redis_url)
    producer = create_broker(qsettings.redis_url)
    queue = qsettings.queue_name
    with TcpProxy("127.0.0.1", 5432) as proxy, psycopg.connect(qsettings.database_url, autocommit=True) as pg:
        db_url = make_conninfo(qsettings.database_url, host="127.0.0.1", port=str(proxy.port))
        env = {**settings_env(qsettings), "DATABASE_URL": db_url}
        sup = Supervisor("worker: dramatiq workers.main:setup --processes 2 --threads 2\n", tmp_path / "run", env)
        supervisors.append(sup)
        parent = sup.running("worker")
        wait_until(lambda: len(children(parent)) == 2, 30, "two worker children")
        # Given messages held by both children: PostgreSQL is away, so the workers hold them
        proxy.close()
        ops = [make_op("freeze", 1000 + i) for i in range(40)]
        for op in ops:
            producer.enqueue(operation_message(op, queue))
        sup.proc.wait_for(r"workers pause", timeout=20)

        def held() -> dict[str, int]:
            sets = cast(list[bytes], client.keys(f"dramatiq:__acks__.*.{queue}"))
            return {k.decode(): int(client.scard(k)) for k in sets if client.scard(k)}

        wait_until(lambda: len(held()) == 2, 20, "both children to hold messages")
        # When one child is SIGKILLed (and PostgreSQL returns)
        victim = children(parent)[0]
        os_kill(victim)
        killed = time.monotonic()
        proxy.open()
        # Then every message is persisted within 15 s of the kill
        wait_until(lambda: count(pg) == len(ops), 15, "every message to be persisted")
        took = time.monotonic() - killed
        assert not alive(victim)
    print(f"all {len(ops)} messages persisted {took:.1f} s after the child's SIGKILL")
    # The group was stopped by dramatiq and started again by the supervisor, logged as such
    sup.proc.wait_for(r"exited: worker", timeout=5)
    sup.proc.wait_for(r"put back \d+ message\(s\) held by", timeout=10)  # the worker's line, from its own file
    wait_until(lambda: client.hlen(f"dramatiq:{queue}.msgs") == 0, 20, "the queue to drain")
    producer.flush(queue)
    client.close()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def count(pg: psycopg.Connection) -> int:
    row = pg.execute("SELECT count(*) FROM stake_records").fetchone()
    return int(row[0]) if row else 0


def os_kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
