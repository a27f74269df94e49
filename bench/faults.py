"""The fault suite: the whole pipeline under one fault at a time, each run ending with the
zero-loss check against the simulator's truth.

    scripts/faults                        # the short setting (CI runs a part of it: tests/test_faults.py)
    scripts/faults --setting long         # the recorded one (docs/RELIABILITY.md)
    scripts/faults --only worker-child-kill,pg-stop-short
    scripts/faults --list
    scripts/faults --broker rabbitmq      # the same scenarios with RabbitMQ carrying the messages

Every scenario gets fresh private servers: a PostgreSQL cluster of its own (initdb + pg_ctl in a
temporary directory, run as the `postgres` user, shared by the scenarios of one run, one database
each), a broker redis-server and a cache redis-server, so stopping, hanging or restarting them
never touches the shared ones; with `--broker rabbitmq` (and in `rabbitmq-restart`) a RabbitMQ
node of the scenario's own carries the messages. The worker (2 processes x 4 threads) and the listener run under the
run command's supervisor (supervisord generated from a Procfile, as `scripts/run` does), except in
`listener-kill-alone`, where the suite restarts the listener itself. `listener-pause` and
`listener-pause-fork` run a second, standby listener: the active one is stopped without dying
(SIGSTOP) with its sessions open, or with its lease session dropped (a partition) while the chain
forks at its checkpoint and moves on, then woken.

Per scenario the table gives: operations expected (the simulator's truth at the end), persisted
(rows), lost (in the truth, not in the ledger), duplicated (a key stored twice), wrong (stored with
other fields or status), extra (stored, not in the truth), and recover: seconds from the end of the
fault (the kill, or the server's return) until every supervised process runs, rows are being
persisted again, and no message is held by a worker that has not beaten since the fault (a dead
one); it cannot read below 1.5 s, the wait for every live worker's next beat. persisting again:
seconds from the end of the fault to the first new row (0 when other workers never stopped).
complete: seconds from the end of the fault until the ledger holds every operation of the blocks
the chain had at that moment, with the truth's fields (pending and confirmed count as one there:
confirmation follows the chain's solidification, not the recovery; the final check compares
statuses too). Rows being written again is not recovery; this is. Target: COMPLETE_TARGET s.
failover: seconds from the active listener's SIGSTOP until the standby held the lease (a new
term), in the scenarios with a standby; their notes count the messages of the old term that
workers dropped as stale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from harness.procs import Proc, python
from harness.servers import PrivatePostgres, PrivateRabbitMQ, PrivateRedis
from harness.stack import SIM_ACCOUNTS, Simulator, drop_lease_session, start_simulator, wait_until
from harness.supervise import Supervisor
from ledger.coordination.recovery import DEFAULT_NAMESPACE
from ledger.ops.metrics import METRICS_KEY
from ledger.store.db import migrate, recreate_database
from workers.metrics import STALE_MESSAGES

WORKER = "worker: dramatiq workers.main:setup --processes 2 --threads 4\n"
LISTENER = "listener: python -m listener\n"
STANDBY = "standby: python -m listener\n"  # a second listener: one is active, the other waits on the lease
HEARTBEAT_TIMEOUT = 5.0  # the product default (WORKER_HEARTBEAT_TIMEOUT)
FIRST_BLOCK = 60_000_000
SETTLE_QUIET = 60.0
COMPLETE_TARGET = 30.0  # seconds from the fault's end to a complete ledger
HANG_WINDOW = 5.0  # seconds of ingest measured before and during the cache hang (at most)
HANG_BACKLOG_BLOCKS = 6000  # history of the cache-hang scenario: a backlog for both windows


@dataclass(frozen=True)
class Setting:
    history_blocks: int
    ops_per_block: float
    pg_short: float  # seconds PostgreSQL is stopped in pg-stop-short
    pg_long: float
    cache_outage: float
    live_seconds: float  # node faults and forks: how long the live chain misbehaves
    pause_seconds: float  # listener-pause: how long the active listener stays stopped
    settle_timeout: float  # seconds allowed for the ledger to equal the truth at the end


SETTINGS = {
    "short": Setting(
        history_blocks=400,
        ops_per_block=3,
        pg_short=5,
        pg_long=15,
        cache_outage=5,
        live_seconds=20,
        pause_seconds=20,
        settle_timeout=120,
    ),
    "long": Setting(
        history_blocks=3000,
        ops_per_block=4,
        pg_short=30,
        pg_long=120,
        cache_outage=30,
        live_seconds=120,
        pause_seconds=60,
        settle_timeout=600,
    ),
}


@dataclass
class Row:
    scenario: str
    expected: int = 0
    persisted: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    extra: int = 0
    recover: float | None = None
    resumed: float | None = None  # seconds from the fault's end to the first new row
    complete: float | None = None  # seconds from the fault's end to a complete ledger (module doc)
    unseen: int = 0  # orphaned in the truth, from blocks forked away before the listener saw them
    notes: str = ""
    failover: float | None = None  # seconds from a leader's pause until a standby held the lease
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.expected > 0 and not (self.lost or self.duplicated or self.wrong or self.extra)


class Stack:
    """Private servers, the simulator, and the worker and listener under supervisord."""

    def __init__(
        self,
        setting: Setting,
        pg: PrivatePostgres,
        *,
        aof: bool = False,
        supervised_listener: bool = True,
        broker: str = "redis",
        standby: bool = False,
    ) -> None:
        self.setting = setting
        self.standby = standby
        self.failover: float | None = None
        self.pg = pg
        self.rundir = Path(tempfile.mkdtemp(prefix="faults-run-"))
        self.db_url = pg.url(f"faults_{uuid.uuid4().hex[:8]}")
        recreate_database(self.db_url)
        migrate(self.db_url)
        self.broker = PrivateRedis(aof=aof)
        self.broker.start()
        self.cache = PrivateRedis()
        self.cache.start()
        # With RabbitMQ as the broker the private redis-server above still serves REDIS_URL's
        # other users; the messages go through a RabbitMQ node of the scenario's own.
        self.rabbit = PrivateRabbitMQ() if broker == "rabbitmq" else None
        if self.rabbit is not None:
            self.rabbit.start()
        self.sim_args: list[str] = []
        self.sim_proc: Proc | None = None
        self.sup: Supervisor | None = None
        self.listener: Proc | None = None
        self.supervised_listener = supervised_listener
        self.env: dict[str, str] = {}

    def start(self, *sim_args: str) -> None:
        s = self.setting
        self.sim_proc, url = start_simulator(
            "--start-block",
            str(FIRST_BLOCK),
            "--history-blocks",
            str(s.history_blocks),
            "--ops-per-block",
            str(s.ops_per_block),
            "--block-interval",
            "0.5",
            *sim_args,
        )
        self.sim = Simulator(url)
        self.env = {
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.broker.url(0),
            "CACHE_REDIS_URL": self.cache.url(0),
            "TRON_NODE_URL": url,
            "TRON_TIMEOUT_SECONDS": "3",
            # The first block, not head - history: live blocks may already have been produced.
            "START_BLOCK": str(FIRST_BLOCK),
            "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
            "QUEUE_NAME": "ledger",
            "POLL_INTERVAL": "0.2",
            "LISTENER_BATCH_BLOCKS": "20",
            # The simulator has no quota: the request budget (10/s by default) would only slow the
            # scenarios down (and its Redis is the cache one, which some scenarios stop).
            "TRON_REQUESTS_PER_SECOND": "0",
            "TRON_REQUESTS_PER_DAY": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        if self.rabbit is not None:
            self.env["BROKER_URL"] = self.rabbit.url()
        procfile = WORKER + (LISTENER if self.supervised_listener else "") + (STANDBY if self.standby else "")
        self.sup = Supervisor(procfile, self.rundir, self.env)
        if not self.supervised_listener:
            self.start_listener()

    def start_listener(self) -> None:
        self.listener = Proc("listener", python("-m", "listener"), self.env)

    def programs(self) -> list[str]:
        return ["worker"] + (["listener"] if self.supervised_listener else []) + (["standby"] if self.standby else [])

    # -- observations ---------------------------------------------------------------------------

    def rows(self) -> int:
        try:
            with psycopg.connect(self.db_url, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)"
                ).fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            return -1  # PostgreSQL is down

    def checkpoint(self) -> int:
        with psycopg.connect(self.db_url, connect_timeout=2) as conn:
            row = conn.execute("SELECT max(block_num) FROM listener_checkpoint").fetchone()
            return int(row[0]) if row and row[0] is not None else -1

    def stranded(self, since: float) -> int:
        """Messages held by workers that have not beaten since `since` (wall clock): dead ones.
        (Live workers beat every timeout / 5 s; call it a beat interval or more after `since`.)
        RabbitMQ hands a dead consumer's unacknowledged messages back itself, at once: 0."""
        if self.rabbit is not None:
            return 0
        client = redis.Redis.from_url(self.broker.url(0), socket_timeout=2)
        try:
            cutoff = since * 1000
            beats = client.zrangebyscore(f"{DEFAULT_NAMESPACE}:__heartbeats__", cutoff, "+inf")
            fresh = {m.decode() if isinstance(m, bytes) else str(m) for m in beats}
            held = 0
            prefix = f"{DEFAULT_NAMESPACE}:__acks__."
            for key in client.scan_iter(match=prefix + "*"):
                worker = key.decode()[len(prefix) :].split(".", 1)[0]
                if worker not in fresh:
                    held += int(client.scard(key))
            return held
        except redis.RedisError:
            return -1
        finally:
            client.close()

    def all_running(self) -> bool:
        assert self.sup is not None
        return all(self.sup.pid(name) > 0 for name in self.programs())

    # -- phases ---------------------------------------------------------------------------------

    def wait_progress(self, share: float, timeout: float = 120) -> None:
        target = int(self.setting.history_blocks * self.setting.ops_per_block * share)
        wait_until(lambda: self.rows() >= target, timeout, f"{target} rows before the fault")

    def wait_recovered(
        self, fault_end: float, head: int, timeout: float
    ) -> tuple[float | None, float | None, float | None]:
        """(recover, resumed, complete) for a fault that ended at `fault_end` with the chain at
        block `head`: see the module docstring; None for what did not happen in time."""
        base = max(self.rows(), 0)
        wall = time.time() - (time.monotonic() - fault_end)
        deadline = time.monotonic() + timeout
        recover = resumed = complete = None
        checked = 0.0
        while time.monotonic() < deadline and (recover is None or complete is None):
            rows = self.rows()
            now = time.monotonic()
            if resumed is None and rows > base:
                resumed = now - fault_end
            if recover is None:
                beaten = time.time() > wall + 1.5 * HEARTBEAT_TIMEOUT / 5
                if beaten and self.all_running() and (rows > base or self.sim_done(rows)) and self.stranded(wall) == 0:
                    recover = now - fault_end
            if complete is None and now - checked >= 0.5:  # the truth and the ledger read whole
                checked = now
                try:
                    if not incomplete(self.db_url, self.sim.truth()["operations"], head):
                        complete = now - fault_end
                except psycopg.OperationalError:
                    pass  # PostgreSQL not back yet
            time.sleep(0.1)
        return recover, resumed, complete

    def lease(self) -> tuple[int, int]:
        """(term, pid) of the listener lease's holder."""
        with psycopg.connect(self.db_url, connect_timeout=2) as conn:
            row = conn.execute("SELECT term, holder FROM listener_terms WHERE name = 'main'").fetchone()
        if row is None:
            raise TimeoutError("no listener holds the lease")
        return int(row[0]), int(str(row[1]).rsplit(":", 1)[1])

    def stale_dropped(self) -> int:
        """Messages workers dropped because their lease term was over (ledger_worker_stale_messages_total)."""
        client = redis.Redis.from_url(self.broker.url(0), socket_timeout=2, decode_responses=True)
        try:
            fields = client.hgetall(METRICS_KEY)
        finally:
            client.close()
        return int(sum(float(v) for k, v in fields.items() if str(k).startswith(STALE_MESSAGES)))

    def sim_done(self, rows: int) -> bool:
        return rows >= len(self.sim.truth()["operations"])

    def finish(self) -> Row:
        """Stop the chain, let the ledger settle, compare it with the truth.

        Settled: equal to the truth, or the listener at the head, the broker empty and the rows
        unchanged for SETTLE_QUIET s (nothing left that could still arrive; a repair that
        re-enqueues after a grace period must fit in that window), or settle_timeout."""
        self.sim.pause()
        head = self.sim.status()["head"]
        deadline = time.monotonic() + self.setting.settle_timeout
        last, quiet_since = -2, time.monotonic()
        while time.monotonic() < deadline:
            try:
                if self.checkpoint() >= head:
                    row = compare(self.db_url, self.sim.truth()["operations"])
                    if row.clean:
                        return row
                    if row.persisted != last or self.queued() != 0:
                        last, quiet_since = row.persisted, time.monotonic()
                    elif time.monotonic() - quiet_since > SETTLE_QUIET:
                        return row
            except (psycopg.OperationalError, redis.RedisError):
                pass
            time.sleep(0.5)
        return compare(self.db_url, self.sim.truth()["operations"])

    def queued(self) -> int:
        """Messages still in the broker (queued, held or waiting for a retry)."""
        if self.rabbit is not None:
            return _rabbit_queued(self.rabbit.url())
        client = redis.Redis.from_url(self.broker.url(0), socket_timeout=2)
        try:
            keys = [k for k in client.scan_iter(match=f"{DEFAULT_NAMESPACE}:*.msgs") if b".XQ." not in k]
            return sum(int(client.hlen(k)) for k in keys)  # every queue and delay queue, not dead letters
        finally:
            client.close()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop(timeout=10)
        if self.sup is not None:
            self.sup.kill()  # the row is taken: nothing of a graceful stop is measured
        if self.sim_proc is not None:
            self.sim_proc.stop()
        self.broker.close()
        self.cache.close()
        if self.rabbit is not None:
            self.rabbit.close()
        shutil.rmtree(self.rundir, ignore_errors=True)


def _rabbit_queued(url: str) -> int:
    """Ready messages of the live and background queues and their delay queues (unacknowledged
    ones are the workers'; the settle rule's quiet period covers them)."""
    import pika

    total = 0
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        for name in ("ledger", "ledger.DQ", "ledger-background", "ledger-background.DQ"):
            channel = conn.channel()
            try:
                total += channel.queue_declare(name, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                continue  # not declared (yet): nothing in it
            channel.close()
    return total


Key = tuple[str, int]  # (tx_id, op_index)


def _expected(truth: list[dict[str, Any]]) -> dict[Key, tuple[Any, ...]]:
    """The truth's operations by key: (kind, resource, amount, receiver, lock, lock period, status)."""
    return {
        (op["tx_id"], op["op_index"]): (
            op["kind"],
            op["resource"],
            op["amount"],
            op["receiver_address"],
            bool(op["lock"]),
            op["lock_period"] or 0,
            op["status"],
        )
        for op in truth
    }


def _ledger(db_url: str) -> tuple[dict[Key, tuple[Any, ...]], int, int, set[int]]:
    """The ledger's rows by key as `_expected` gives the truth's, how many keys were stored twice,
    how many rows there are, and the blocks the listener rolled back."""
    stored: dict[Key, tuple[Any, ...]] = {}
    duplicated = 0
    with psycopg.connect(db_url, connect_timeout=2) as conn:
        stake = conn.execute(
            "SELECT tx_id, op_index, operation_type, resource, amount, NULL, false, 0, status FROM stake_records"
        ).fetchall()
        delegate = conn.execute(
            "SELECT tx_id, op_index, operation_type, resource, amount, receiver_address, lock, lock_period, status"
            " FROM delegate_records"
        ).fetchall()
        rolled_back = {n for (n,) in conn.execute("SELECT DISTINCT block_num FROM orphaned_blocks")}
    for r in [*stake, *delegate]:
        key = (r[0], r[1])
        if key in stored:
            duplicated += 1
        stored[key] = (r[2], r[3], r[4], r[5], bool(r[6]), r[7] or 0, r[8])
    return stored, duplicated, len(stake) + len(delegate), rolled_back


def incomplete(db_url: str, truth: list[dict[str, Any]], head: int) -> int:
    """How many operations of the truth's blocks up to `head` the ledger lacks or holds with other
    fields, pending and confirmed counted as one (a row of a block forked away before the listener
    indexed it is not expected)."""
    upto = [op for op in truth if op["block_num"] <= head]
    block_of = {(op["tx_id"], op["op_index"]): op["block_num"] for op in upto}
    stored, _, _, rolled_back = _ledger(db_url)
    short = 0
    for key, want in _expected(upto).items():
        have = stored.get(key)
        if have is None:
            short += not (want[6] == "orphaned" and block_of[key] not in rolled_back)
        elif have[:6] != want[:6] or _settled(have[6]) != _settled(want[6]):
            short += 1
    return short


def _settled(status: str) -> str:
    return "confirmed" if status == "pending" else status


def compare(db_url: str, truth: list[dict[str, Any]]) -> Row:
    expected = _expected(truth)
    block_of = {(op["tx_id"], op["op_index"]): op["block_num"] for op in truth}
    stored, duplicated, persisted, rolled_back = _ledger(db_url)
    missing = [k for k in expected if k not in stored]
    # A row the truth lists as orphaned, from a block the listener never indexed (a fork replaced
    # it first), was never in the ledger and never should be: not lost. A block the listener did
    # index and then rolled back is in orphaned_blocks, and its rows must be there, orphaned.
    unseen = [k for k in missing if expected[k][6] == "orphaned" and block_of[k] not in rolled_back]
    lost = [k for k in missing if k not in set(unseen)]
    extra = [k for k in stored if k not in expected]
    wrong = [k for k in expected if k in stored and stored[k] != expected[k]]
    examples = [f"lost {k}: {expected[k]}" for k in lost[:4]]
    examples += [f"wrong {k}: {stored[k]} != {expected[k]}" for k in wrong[:2]]
    return Row(
        "",
        expected=len(expected),
        persisted=persisted,
        lost=len(lost),
        duplicated=duplicated,
        wrong=len(wrong),
        extra=len(extra),
        unseen=len(unseen),
        examples=examples + [f"extra {k}" for k in extra[:2]],
    )


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry.name))
    return kids


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- scenarios: each injects its fault into a started stack and returns (fault end, notes) ------


def worker_child_kill(st: Stack) -> tuple[float, str]:
    assert st.sup is not None
    parent = st.sup.running("worker")
    wait_until(lambda: len(_children(parent)) == 2, 30, "worker children")
    _kill(_children(parent)[0])
    return time.monotonic(), "dramatiq stops the group, supervisord restarts it"


def worker_parent_kill(st: Stack) -> tuple[float, str]:
    assert st.sup is not None
    parent = st.sup.running("worker")
    kids = _children(parent)
    _kill(parent)
    end = time.monotonic()
    wait_until(lambda: not any(_alive(k) for k in kids), 10, "its children to die with it")
    return end, "children die with the parent (PDEATHSIG)"


def listener_kill_supervised(st: Stack) -> tuple[float, str]:
    assert st.sup is not None
    _kill(st.sup.running("listener"))
    return time.monotonic(), "supervisord restarts it"


def listener_kill_alone(st: Stack) -> tuple[float, str]:
    assert st.listener is not None
    st.listener.kill()
    st.listener.popen.wait(10)
    end = time.monotonic()
    st.start_listener()  # as an operator or process manager would
    return end, "restarted by the suite"


def _take_over(st: Stack, pause: Callable[[int], None]) -> tuple[int, float]:
    """SIGSTOP the active listener, `pause(pid)` (the rest of the fault, while it is stopped), then
    SIGCONT; returns its pid and how long the standby took to hold the lease (Stack.failover)."""
    term, pid = st.lease()
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_until(lambda: st.lease()[0] > term, 30, "a standby to take the lease")
        st.failover = time.monotonic() - stopped
        pause(pid)
    finally:
        os.kill(pid, signal.SIGCONT)
    return pid, st.failover


def listener_pause(seconds: float) -> Callable[[Stack], tuple[float, str]]:
    def fault(st: Stack) -> tuple[float, str]:
        started = time.monotonic()
        _take_over(st, lambda pid: time.sleep(max(0.0, seconds - (time.monotonic() - started))))
        return time.monotonic(), f"active listener SIGSTOP {seconds:.0f} s, its sessions open; SIGCONT"

    return fault


def _signal_workers(st: Stack, sig: int) -> None:
    assert st.sup is not None
    parent = st.sup.running("worker")
    for pid in [parent, *_children(parent)]:
        os.kill(pid, sig)


def listener_pause_fork(st: Stack) -> tuple[float, str]:
    # At the head with the chain paused, so the fork replaces the paused listener's last blocks.
    wait_until(lambda: st.checkpoint() >= int(st.sim.status()["head"]) - 1, 120, "the listener at the head")
    st.sim.pause()
    head = int(st.sim.status()["head"])
    wait_until(lambda: st.checkpoint() == head, 30, "the listener at the paused head")

    def partition_and_fork(pid: int) -> None:
        dropped = drop_lease_session(st.db_url, pid, "main")
        if dropped != 1:
            raise TimeoutError(f"expected one lease session of pid {pid} to drop, found {dropped}")
        st.sim.http.post("/sim/fork", json={"depth": 3}).raise_for_status()
        st.sim.produce(40)
        top = int(st.sim.status()["head"])
        wait_until(lambda: st.checkpoint() == top, 60, "the new active listener at the head")

    # Messages of its term still queued when it is deposed: the workers stall over its last blocks.
    _signal_workers(st, signal.SIGSTOP)
    try:
        st.sim.produce(5)
        wait_until(lambda: st.checkpoint() == head + 5, 30, "the listener at the new blocks")
        _take_over(st, partition_and_fork)
        time.sleep(3)  # what the woken one would still do
    finally:
        _signal_workers(st, signal.SIGCONT)
    st.sim.resume()
    return time.monotonic(), (
        "workers stalled over its last 5 blocks; active listener SIGSTOP, lease session dropped,"
        " fork at its checkpoint (3 blocks) + 40, SIGCONT; workers resumed"
    )


def _down_for(seconds: float, stop: Callable[[], None], start: Callable[[], None]) -> float:
    """Stop a server, leave it down `seconds`, start it again; return when it is back (the fault's end)."""
    stop()
    time.sleep(seconds)
    start()
    return time.monotonic()


def rabbitmq_restart(st: Stack) -> tuple[float, str]:
    rabbit = st.rabbit
    assert rabbit is not None
    end = _down_for(1, lambda: rabbit.stop(signal.SIGTERM), rabbit.start)
    return end, "clean shutdown and start of the node, same ports and data directory"


def rabbitmq_wiped(st: Stack) -> tuple[float, str]:
    rabbit = st.rabbit
    assert rabbit is not None

    def wiped_start() -> None:
        shutil.rmtree(rabbit.dir / "mnesia", ignore_errors=True)
        rabbit.start()

    end = _down_for(1, lambda: rabbit.stop(signal.SIGTERM), wiped_start)
    return end, "clean shutdown, data directory deleted (every queue and message gone), start"


def broker_restart(st: Stack) -> tuple[float, str]:
    end = _down_for(1, lambda: st.broker.stop(signal.SIGTERM), st.broker.start)
    return end, "clean shutdown and start, same port and directory"


def pg_stop(seconds: float) -> Callable[[Stack], tuple[float, str]]:
    def fault(st: Stack) -> tuple[float, str]:
        end = _down_for(seconds, lambda: st.pg.stop("fast"), st.pg.start)
        return end, f"pg_ctl stop -m fast, {seconds:.0f} s, start"

    return fault


def cache_stop(seconds: float) -> Callable[[Stack], tuple[float, str]]:
    def fault(st: Stack) -> tuple[float, str]:
        end = _down_for(seconds, lambda: st.cache.stop(signal.SIGKILL), st.cache.start)
        return end, f"SIGKILL, {seconds:.0f} s, start"

    return fault


def cache_hang(seconds: float) -> Callable[[Stack], tuple[float, str]]:
    """SIGSTOP the cache Redis for `seconds`, measuring the workers' ingest before and during it
    with a backlog to take (else the rate measured is the chain's, not what ingest can do)."""

    def fault(st: Stack) -> tuple[float, str]:
        _queue_backlog(st)
        window = min(seconds, HANG_WINDOW)
        normal, normal_span = _ingest_rate(st, window)
        hung_at = time.monotonic()
        st.cache.signal(signal.SIGSTOP)
        try:
            hung, hung_span = _ingest_rate(st, window)
            time.sleep(max(0.0, hung_at + seconds - time.monotonic()))
        finally:
            st.cache.signal(signal.SIGCONT)
        ratio = hung / normal if normal > 0 else float("nan")
        return (
            time.monotonic(),
            f"SIGSTOP {seconds:.0f} s; ingest with a backlog, hung/normal {hung:.0f}/{normal:.0f} ops/s = {ratio:.0%}"
            f" (over {hung_span:.1f}/{normal_span:.1f} s)",
        )

    return fault


def _queue_backlog(st: Stack) -> None:
    """Let the listener queue the chain so far with the worker stopped, then start the worker."""
    assert st.sup is not None
    st.sup.control("stop", "worker")
    wait_until(lambda: st.checkpoint() >= int(st.sim.status()["head"]) - 2, 300, "the listener to queue the chain")
    base = st.rows()
    st.sup.control("start", "worker")
    wait_until(lambda: st.rows() > base, 60, "the worker to take the backlog")


def _ingest_rate(st: Stack, window: float) -> tuple[float, float]:
    """(operations persisted a second, over how many seconds): for `window` seconds, or until the
    broker's queue ran dry (past that, the rate would be the chain's)."""
    start_rows = last_rows = st.rows()
    start = last = time.monotonic()
    while last - start < window:
        time.sleep(0.2)
        rows, now = st.rows(), time.monotonic()
        if st.queued() == 0:
            break
        last_rows, last = rows, now
    span = last - start
    return ((last_rows - start_rows) / span if span > 0 else 0.0), span


def node_faults_and_forks(st: Stack) -> tuple[float, str]:
    st.sim.resume()
    time.sleep(st.setting.live_seconds)
    faults = st.sim.http.get("/sim/faults").json()
    forks = st.sim.http.get("/sim/fork").json()
    st.sim.http.post("/sim/faults", json={"rate": 0, "suspended": False})
    st.sim.http.post("/sim/fork", json={"rate": 0})
    injected = sum(faults.get("counts", {}).values())
    return time.monotonic(), f"{injected} node faults, {forks.get('forks', 0)} forks in {st.setting.live_seconds:.0f} s"


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Stack], tuple[float, str]] | None
    aof: bool = False
    supervised_listener: bool = True
    sim_args: tuple[str, ...] = ()
    pending: str = ""
    broker: str = "redis"
    history_factor: int = 1  # a longer backlog, for scenarios that measure ingest during the fault
    standby: bool = False  # a second listener under the supervisor, on standby


def scenarios(s: Setting) -> list[Scenario]:
    return [
        Scenario("worker-child-kill", worker_child_kill),
        Scenario("worker-parent-kill", worker_parent_kill),
        Scenario("listener-kill-alone", listener_kill_alone, supervised_listener=False),
        Scenario("listener-kill-supervised", listener_kill_supervised),
        Scenario("broker-restart-aof", broker_restart, aof=True),
        Scenario("broker-restart-no-aof", broker_restart, aof=False),
        Scenario("pg-stop-short", pg_stop(s.pg_short)),
        Scenario("pg-stop-long", pg_stop(s.pg_long)),
        Scenario("cache-stop", cache_stop(s.cache_outage)),
        Scenario("cache-hang", cache_hang(s.cache_outage), history_factor=-(-HANG_BACKLOG_BLOCKS // s.history_blocks)),
        Scenario("listener-pause", listener_pause(s.pause_seconds), standby=True),
        Scenario("listener-pause-fork", listener_pause_fork, standby=True),
        Scenario("rabbitmq-restart", rabbitmq_restart, broker="rabbitmq"),
        Scenario("rabbitmq-restart-wiped", rabbitmq_wiped, broker="rabbitmq"),
        Scenario(
            "node-faults-and-forks",
            node_faults_and_forks,
            sim_args=(
                "--fault-rate",
                "0.1",
                "--suspend-seconds",
                "1",
                "--timeout-seconds",
                "3",
                "--fork-rate",
                "0.05",
                "--fork-depth",
                "4",
            ),
        ),
    ]


def run_scenario(scn: Scenario, setting: Setting, pg: PrivatePostgres) -> Row:
    if scn.fault is None:
        return Row(scn.name, notes=f"pending: {scn.pending}")
    if scn.history_factor > 1:
        setting = replace(setting, history_blocks=setting.history_blocks * scn.history_factor)
    stack = Stack(
        setting, pg, aof=scn.aof, supervised_listener=scn.supervised_listener, broker=scn.broker, standby=scn.standby
    )
    try:
        stack.start(*scn.sim_args)
        stack.wait_progress(0.25 / scn.history_factor)
        fault_end, notes = scn.fault(stack)
        head = int(stack.sim.status()["head"])
        recover, resumed, complete = stack.wait_recovered(fault_end, head, setting.settle_timeout)
        row = stack.finish()
        row.scenario, row.recover, row.resumed, row.complete, row.notes = scn.name, recover, resumed, complete, notes
        row.failover = stack.failover
        if scn.standby:
            row.notes += f"; {stack.stale_dropped()} stale message(s) of the old term dropped"
        if row.unseen:
            row.notes += f"; {row.unseen} orphaned row(s) of blocks forked away before indexing (not lost)"
        return row
    except (TimeoutError, httpx.HTTPError, psycopg.Error, redis.RedisError) as exc:
        return Row(scn.name, notes=f"run failed: {type(exc).__name__}: {exc}")
    finally:
        stack.close()


HEADER = (
    "| scenario | expected | persisted | lost | duplicated | wrong | extra | recover (s)"
    " | persisting again (s) | complete (s) | failover (s) | notes |"
)


def format_row(row: Row) -> str:
    recover = "-" if row.recover is None else f"{row.recover:.1f}"
    resumed = "-" if row.resumed is None else f"{row.resumed:.1f}"
    complete = "-" if row.complete is None else f"{row.complete:.1f}"
    failover = "-" if row.failover is None else f"{row.failover:.1f}"
    cells = [
        row.scenario,
        row.expected,
        row.persisted,
        row.lost,
        row.duplicated,
        row.wrong,
        row.extra,
        recover,
        resumed,
        complete,
        failover,
    ]
    return "| " + " | ".join(str(c) for c in cells) + f" | {row.notes} |"


def on_broker(scn: Scenario, broker: str) -> Scenario:
    """The scenario with `broker` carrying the messages, unless it is about one broker's restart."""
    if scn.name.startswith(("broker-restart", "rabbitmq-restart")) or broker == scn.broker:
        return scn
    return replace(scn, name=f"{scn.name} [{broker}]", broker=broker)


def run_suite(
    setting: Setting, names: list[str] | None = None, out: Any = sys.stdout, broker: str = "redis"
) -> list[Row]:
    chosen = [on_broker(s, broker) for s in scenarios(setting) if names is None or s.name in names]
    pg = PrivatePostgres()
    pg.create()
    rows = []
    try:
        print(HEADER, file=out)
        print("|" + "---|" * 12, file=out)
        for scn in chosen:
            row = run_scenario(scn, setting, pg)
            rows.append(row)
            print(format_row(row), file=out, flush=True)
            for example in row.examples:
                print(f"    {example}", file=sys.stderr)
    finally:
        pg.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="short")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="the broker of every scenario that is not about one broker's restart (a private node either way)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file as JSON")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    if args.list:
        for scn in scenarios(setting):
            print(scn.name + (f"  (pending: {scn.pending})" if scn.pending else ""))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    known = {s.name for s in scenarios(setting)}
    if names and set(names) - known:
        parser.error(f"unknown scenario(s): {sorted(set(names) - known)}")
    started = time.monotonic()
    rows = run_suite(setting, names, broker=args.broker)
    print(f"setting {args.setting}: {len(rows)} scenario(s) in {time.monotonic() - started:.0f} s")
    timed = [r for r in rows if not r.notes.startswith("pending")]
    met = [r for r in timed if r.complete is not None and r.complete <= COMPLETE_TARGET]
    print(f"complete within {COMPLETE_TARGET:.0f} s of the fault's end: {len(met)} of {len(timed)}")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "clean": r.clean} for r in rows], indent=1))
    return 0 if all(r.clean or r.notes.startswith("pending") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
