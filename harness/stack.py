"""Start the whole pipeline from real processes: simulator, listener, workers. Used by the
end-to-end tests and by the benchmarks."""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pika
import psycopg
import redis
from dramatiq.common import dq_name, xq_name

from harness.procs import Proc, python, tcp_ports
from ledger.config import Settings, load_settings
from ledger.coordination.queue import (
    KEPT_QUEUE_SUFFIX,
    background_queue,
    create_broker,
    is_amqp,
    queued_messages,
    webhook_queue,
)
from ledger.ops.procfile import parse_procfile
from ledger.store.accounting import checkpoint_block
from ledger.store.db import migrate, recreate_database

SIM_ACCOUNTS = (
    "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre",
    "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ",
    "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
)


def add_density_option(parser: argparse.ArgumentParser) -> None:
    """--mainnet-density, for a benchmark that passes it to start_simulator."""
    parser.add_argument(
        "--mainnet-density",
        action="store_true",
        help="mainnet-sized blocks: mainnet's transaction mix, ~296 transactions and ~300 KB of JSON a block"
        " (simulator/traffic.py)",
    )


def start_simulator(
    *args: str,
    accounts: tuple[str, ...] = SIM_ACCOUNTS,
    history_blocks: int = 0,
    mainnet_density: bool = False,
    prerender: bool = False,
    ready_timeout: float | None = None,
) -> tuple[Proc, str]:
    """The simulator with `args` and `history_blocks` of history, once it says it is ready.

    `mainnet_density`: blocks in mainnet's mix and sizes (live blocks too). `prerender`: the history's
    replies rendered before it serves, into a cache sized for mainnet-density blocks (~560 KB one with
    its TransactionInfo), so a catch-up measures its client, not the test node's rendering;
    a live block is rendered on its first request (a few ms). Generating a long mainnet-density history
    takes ~50 s per 1,000 blocks on a loaded host, and the ready timeout (unless given) allows for it."""
    extra = ["--history-blocks", str(history_blocks)] if history_blocks else []
    if mainnet_density:
        extra.append("--mainnet-density")
    if prerender:
        extra += ["--prerender", "--render-cache-mb", str(128 + history_blocks * 560 // 1024)]
    if ready_timeout is None:
        ready_timeout = 120.0 + (history_blocks * 0.3 if mainnet_density else 0.0)
    proc = Proc(
        "simulator",
        python("-m", "simulator", "--port", "0", "--accounts", ",".join(accounts), *extra, *args),
        {"PYTHONUNBUFFERED": "1"},
    )
    match = proc.wait_for(r"SIMULATOR READY (http://\S+)", timeout=ready_timeout)
    return proc, match.group(1)


WORKER_READY = r"Worker process is ready|worker.*ready"
LISTENER_READY = r"listener started"


def worker_proc(env: Mapping[str, str], processes: int = 1, threads: int = 4) -> Proc:
    """A worker, started, not yet ready (WORKER_READY)."""
    return Proc(
        "worker",
        python("-m", "dramatiq", "workers.main:setup", "--processes", str(processes), "--threads", str(threads)),
        env,
    )


def start_worker(env: Mapping[str, str], processes: int = 1, threads: int = 4) -> Proc:
    proc = worker_proc(env, processes, threads)
    proc.wait_for(WORKER_READY, timeout=60)
    return proc


def start_listener(env: Mapping[str, str], *args: str) -> Proc:
    proc = Proc("listener", python("-m", "listener", *args), env)
    proc.wait_for(LISTENER_READY, timeout=30)
    return proc


def start_worker_and_listener(env: Mapping[str, str]) -> list[Proc]:
    """A worker and a listener, both started before waiting for either: each spends seconds of its
    start importing and connecting, and those overlap. (Started here, not in threads: a child's
    PR_SET_PDEATHSIG fires when the thread that forked it ends.)"""
    worker = worker_proc(env)
    listener = Proc("listener", python("-m", "listener"), env)
    try:
        worker.wait_for(WORKER_READY, timeout=60)
        listener.wait_for(LISTENER_READY, timeout=30)
    except BaseException:
        worker.kill()
        listener.kill()
        raise
    return [worker, listener]


class Simulator:
    """The simulator's control API (/sim/*)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/sim/status").json()
        return body

    def pause(self) -> None:
        self.http.post("/sim/pause")

    def resume(self) -> None:
        self.http.post("/sim/resume")

    def produce(self, count: int) -> None:
        self.http.post("/sim/produce", json={"count": count})

    def truth(self, account: str | None = None) -> dict[str, Any]:
        params = {"account": account} if account else {}
        body: dict[str, Any] = self.http.get("/sim/truth", params=params).json()
        return body


def start_chain(procs: list[Proc], settings: Settings, *args: str) -> Simulator:
    """The simulator of a test's pipeline: unfrozen lots mature after the ledger's own delay, and it
    stops with the test's other processes (`procs`)."""
    proc, url = start_simulator(*args, "--unfreeze-delay-seconds", str(settings.unfreeze_delay_seconds))
    procs.append(proc)
    return Simulator(url)


def main_checkpoint(database_url: str) -> int:
    """The block the listener's main checkpoint stands at (-1 before its first)."""
    with psycopg.connect(database_url) as conn:
        mark = checkpoint_block(conn)
        return -1 if mark is None else mark


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def procfile_web_flag(flag: str) -> str:
    """The value the Procfile's web line gives `flag`, so tests and benches serve as production does."""
    text = (Path(__file__).resolve().parent.parent / "Procfile").read_text()
    web = next(p for p in parse_procfile(text) if p.name == "web")
    words = web.command.split()
    return words[words.index(flag) + 1]


def start_web(env: Mapping[str, str], port: int, workers: int = 2, threads: int = 4) -> Proc:
    """The web process as the Procfile runs it (granian, WSGI, app factory)."""
    # granian binds with SO_REUSEPORT: on a port another server holds, it starts without a word and
    # the kernel splits the connections between the two (two soaks on one port once read each
    # other's pages). So a port in use is refused here.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(f"port {port} is in use: pick a free one (0 in the benches)") from None
    proc = Proc(
        "web",
        python(
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--factory",
            "web.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--blocking-threads",
            str(threads),
            "--backpressure",
            str(procfile_web_flag("--backpressure")),
            "--http",
            procfile_web_flag("--http"),
            "--http1-header-read-timeout",
            procfile_web_flag("--http1-header-read-timeout"),
            "--no-ws",
        ),
        env,
    )
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health/live"), 30, "the web server")
    # One worker answering is not all of them: until the others accept, a host has fewer permits.
    for worker in range(1, workers + 1):
        proc.wait_for(rf"Started worker-{worker}\b", timeout=30)
    return proc


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def add_ledger_options(parser: argparse.ArgumentParser, database: str, broker_db: int, cache_db: int) -> None:
    """--database-url, --redis-url and --cache-redis-url: a run's own database and Redis DBs (for
    new_ledger), by default `database` and DBs of the local servers."""
    parser.add_argument(
        "--database-url",
        default=f"postgresql://postgres@127.0.0.1:5432/{database}",
        help="dropped and re-created (default %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=f"redis://127.0.0.1:6379/{broker_db}",
        help="the broker's Redis DB: flushed (default %(default)s)",
    )
    parser.add_argument(
        "--cache-redis-url",
        default=f"redis://127.0.0.1:6379/{cache_db}",
        help="the cache's Redis DB: flushed (default %(default)s)",
    )


def new_ledger(database_url: str, redis_url: str, cache_redis_url: str, **overrides: object) -> Settings:
    """Settings for an empty ledger: the database dropped, re-created and migrated, the broker's and
    the cache's Redis DBs flushed (all of them the caller's own); `overrides` as load_settings."""
    recreate_database(database_url)
    migrate(database_url)
    settings = load_settings(
        {}, database_url=database_url, redis_url=redis_url, cache_redis_url=cache_redis_url, **overrides
    )
    for url in {redis_url, cache_redis_url}:
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BROKER_URL": settings.broker_url,
        "CACHE_REDIS_URL": settings.cache_redis_url,
        "TRON_NODE_URL": settings.tron_node_url,
        "UNFREEZE_DELAY_SECONDS": str(settings.unfreeze_delay_seconds),
        "RETRY_MIN_BACKOFF_MS": str(settings.retry_min_backoff_ms),
        "RETRY_MAX_BACKOFF_MS": str(settings.retry_max_backoff_ms),
        "RETRY_MAX_RETRIES": str(settings.retry_max_retries),
        "QUEUE_NAME": settings.queue_name,
        "POLL_INTERVAL": str(settings.poll_interval),
        "TRON_REQUESTS_PER_SECOND": str(settings.tron_requests_per_second),
        "TRON_REQUESTS_BURST": str(settings.tron_requests_burst),
        "TRON_REQUESTS_PER_DAY": str(settings.tron_requests_per_day),
        "WEBHOOK_ALLOW_PRIVATE": "1" if settings.webhook_allow_private else "0",
        "WEBHOOK_TIMEOUT_SECONDS": str(settings.webhook_timeout_seconds),
        "WEBHOOK_RETRY_HOURS": str(settings.webhook_retry_hours),
        "WEBHOOK_MIN_BACKOFF_MS": str(settings.webhook_min_backoff_ms),
        "WEBHOOK_MAX_BACKOFF_MS": str(settings.webhook_max_backoff_ms),
        "MONITOR_CACHE_SECONDS": str(settings.monitor_cache_seconds),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def broker_url(env: Mapping[str, str]) -> str:
    return env.get("BROKER_URL") or env["REDIS_URL"]


def queued(env: Mapping[str, str]) -> int:
    """Messages waiting in the test's queue, on whichever broker `env` selects."""
    broker = create_broker(broker_url(env))
    try:
        return queued_messages(broker, env["QUEUE_NAME"])
    finally:
        broker.close()


def lose_queued_messages(env: Mapping[str, str]) -> None:
    """What a broker restart without persistence (or a failover to an empty replica) does; on
    RabbitMQ, whose queues are durable, what a node that lost its data directory does."""
    url = broker_url(env)
    if is_amqp(url):
        delete_rabbitmq_queues(url, env["QUEUE_NAME"])
    else:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()  # the test broker's own database
        finally:
            client.close()


def delete_rabbitmq_queues(url: str, queue: str) -> None:
    """Drop a test's queues (Dramatiq declares three per queue name; workers declare the live queue
    and its background queue, the accounting its mark; ledger.coordination.queue): what a node that
    lost its data directory has left of them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for base in (queue, background_queue(queue), webhook_queue(queue)):
            for name in (base, dq_name(base), xq_name(base)):
                channel.queue_delete(queue=name)
        # The mark last, as one loss of everything: a repair pass seeing it gone before the
        # messages would re-send into queues about to go and mark them kept again.
        channel.queue_delete(queue=queue + KEPT_QUEUE_SUFFIX)
    finally:
        connection.close()


def drop_lease_session(database_url: str, pid: int, lease: str) -> int:
    """Terminate process `pid`'s lease connection for `lease` on the server side, as a network
    partition or a PostgreSQL failover does; its other sessions stay. Returns how many were dropped."""
    ports = sorted(tcp_ports(pid))
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE client_port = ANY(%s) AND application_name = %s",
            (ports, f"lease {lease}"[:63]),
        ).fetchall()
    return len(rows)
