"""The worker process: `dramatiq workers.main:setup --processes 2 --threads 4`.

The dramatiq CLI imports this module and calls `setup()` in each worker process, after the fork,
so that is where this process's broker, PostgreSQL pool and cache client are made; importing the
module creates nothing.

Crashes: the dramatiq CLI stops the whole group when one child dies (its design: the process
manager restarts the group, see docs/RELIABILITY.md), a child dies with its parent
(`die_with_parent`), and the messages a dead process held go back to the queue within seconds
(ledger.coordination.recovery).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal

import dramatiq
from dramatiq import Worker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries, TimeLimit
from dramatiq.worker import ConsumerThread

from ledger.chain.node import JOBS, node_from_settings
from ledger.config import Settings, load_settings
from ledger.coordination.budget import Priority
from ledger.coordination.queue import background_queue, check_broker_durability, create_broker, is_background
from ledger.coordination.recovery import Heartbeat
from ledger.ops.logs import setup_logging
from ledger.ops.metrics import Counters
from ledger.store.cache import create_cache_client
from ledger.store.db import create_pool
from workers.actors import Deps, register_actors
from workers.dbgate import DbGate
from workers.deadletters import DeadLetters
from workers.invalidator import Invalidator
from workers.metrics import Metrics
from workers.relay import Relay
from workers.taken import TakenItems
from workers.webhooks import DUE_GRACE_SECONDS, Sender

log = logging.getLogger(__name__)

# One short attempt: a dead or hung cache then opens the invalidator's breaker (workers.invalidator),
# so this is what one message pays per outage, not per message.
CACHE_SOCKET_TIMEOUT = 0.25

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def setup() -> None:
    """Entry point for the dramatiq CLI (`workers.main:setup`): build and install this process's broker."""
    die_with_parent()
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, secrets=(settings.tron_api_key,))
    # The CLI configured the root logger already (so basicConfig above was a no-op); apply our level.
    for name in ("ledger", "workers"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    broker, _ = create_worker_broker(settings)
    dramatiq.set_broker(broker)
    log.info("worker ready on queues %r and %r", settings.queue_name, background_queue(settings.queue_name))


def create_worker_broker(settings: Settings) -> tuple[dramatiq.Broker, Deps]:
    """A broker with the dead-letter middleware and both actors, plus the dependencies they use."""
    broker = create_broker(settings.effective_broker_url)
    # Raises BrokerNotDurable when the settings say to refuse a broker Redis without AOF.
    check_broker_durability(broker, require=settings.broker_require_persistence)
    if isinstance(broker, RedisBroker):
        # The broker's own (random) maintenance then agrees with our reaper on what "dead" means.
        broker.heartbeat_timeout = int(settings.worker_heartbeat_timeout * 1000)
    # One connection per worker thread (the pool is resized to the thread count at worker boot):
    # an actor holds one for its whole transaction. Autocommit: a one-statement upsert is its own
    # transaction (see workers.persist). No check on checkout: a connection that died with
    # PostgreSQL fails its message, which then waits at the gate and runs again (workers.dbgate).
    pool = create_pool(
        settings.database_url, max_size=settings.db_pool_size, name="worker", autocommit=True, check=False
    )
    gate = DbGate(settings.database_url, pool)
    cache = create_cache_client(settings.cache_redis_url, CACHE_SOCKET_TIMEOUT)
    # The reconciliation jobs' node client, drawing on the request budget every process shares as
    # background work: the listener's reserve is not theirs to spend. Its requests are counted like
    # the listener's (TronGrid requests per 1,000 API reads, /metrics).
    counters = Counters()
    node = (
        node_from_settings(settings, counters=counters, priority=Priority.BACKGROUND, caller=JOBS)
        if settings.tron_node_url
        else None
    )
    deps = Deps(
        settings=settings,
        pool=pool,
        gate=gate,
        invalidator=Invalidator(cache),
        node=node,
        broker=broker,
        taken=TakenItems(settings.database_url),
        counters=counters,
        sender=Sender(settings),
    )
    # Before Retries in the list = after it in the reversed after_* hooks (see workers.deadletters).
    broker.add_middleware(DeadLetters(pool, secrets=(settings.tron_api_key,)), before=Retries)
    # Before TimeLimit: a thread waiting for PostgreSQL has not started its message's clock yet.
    broker.add_middleware(_WaitForDatabase(gate), before=TimeLimit)
    # Redis only: RabbitMQ itself gives a dead consumer's unacked messages back when its
    # connection closes, which the kernel does the moment the process dies.
    heartbeat = None
    if isinstance(broker, RedisBroker):
        heartbeat = Heartbeat(broker.client, broker.broker_id, timeout=settings.worker_heartbeat_timeout)
    # The webhook actor reads its retry count to know its last attempt (workers/webhooks.py).
    broker.add_middleware(CurrentMessage())
    relay = Relay(
        pool,
        broker,
        settings,
        interval=settings.events_relay_seconds,
        # a fresh delivery message is overdue once it could have run, failed and waited a retry
        due_seconds=DUE_GRACE_SECONDS + settings.webhook_max_backoff_ms / 1000 + 4 * settings.webhook_timeout_seconds,
    )
    broker.add_middleware(_ProcessResources(deps, heartbeat, relay))
    broker.add_middleware(_BackgroundLane(settings.worker_background_threads))
    broker.add_middleware(Metrics(settings.redis_url, counters), before=Retries)
    register_actors(broker, deps)
    return broker, deps


def die_with_parent() -> None:
    """In a dramatiq child process: be killed by the kernel the moment the parent dies.

    Without it the children of a SIGKILLed parent ran on as orphans, heartbeating while they hung
    on a full log pipe that nobody read any more, and held their messages. PR_SET_PDEATHSIG rather
    than a thread polling os.getppid(): the kernel delivers it at once, with no polling delay, and
    it works even when every thread of the child is blocked (a watchdog thread would be stuck
    behind that same write). SIGKILL rather than SIGTERM: a graceful stop would log to the dead
    parent's pipe and could hang the same way; the messages the child held come back through the
    heartbeat reaper (ledger.coordination.recovery). The parent's main thread forks the children and lives as
    long as the parent, so "parent thread exited" (the prctl caveat) is "parent exited" here.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return  # not a dramatiq child (tests, the CLI parent itself)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the reaper still recovers messages
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent.pid:  # the parent died before the prctl: nobody will signal us
        os._exit(1)


class _BackgroundLane(Middleware):
    """Keep some of this process's threads free for live messages.

    A worker's threads take prefetched messages by actor priority, live first, but they cannot
    take one back: a reconciliation job holds its thread for seconds while it waits on the request
    budget (background work is budget-bound, 6 requests/s for 1,000 accounts' jobs). With every
    thread in such a job, a live message waited for one to finish: block -> row committed p99
    3.0 s in the 30-minute soak, 0.5-0.9 s in the minutes no job ran. So the background queue's
    consumer may hold at most `limit` messages (its prefetch; 0 = half the threads): that many
    threads at most are ever in background work. It costs the jobs nothing, since the budget is
    what paces them, and costs a backfill the drain rate of the threads it no longer gets."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.per_queue = limit

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Worker) -> None:
        threads = worker.worker_threads
        self.limit = max(1, min(self.limit or threads // 2, threads - 1))
        # The lane is shared by the background queues (backfill and jobs, webhook deliveries).
        lanes = [q for q in broker.get_declared_queues() if is_background(q)]
        self.per_queue = max(1, self.limit // max(1, len(lanes)))
        log.info(
            "background lane: at most %d of %d threads (%d per queue of %s)",
            self.limit,
            threads,
            self.per_queue,
            sorted(lanes),
        )

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: ConsumerThread) -> None:
        # Called in the consumer thread before its first consume(), which reads `prefetch` (the
        # delay queue's consumer, "<queue>.DQ", only holds retries until due: left alone).
        if is_background(thread.queue_name):
            thread.prefetch = self.per_queue


class _WaitForDatabase(Middleware):
    """Hold each worker thread before its next message while PostgreSQL is known to be down."""

    def __init__(self, gate: DbGate) -> None:
        self.gate = gate

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.gate.wait()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: object) -> None:
        self.gate.stop()


class _ProcessResources(Middleware):
    """Size the pool to the worker's threads and start the heartbeat at boot; at shutdown, once the
    threads stopped, stop it and close the pool and the cache client."""

    def __init__(self, deps: Deps, heartbeat: Heartbeat | None, relay: Relay | None = None) -> None:
        self.deps = deps
        self.heartbeat = heartbeat
        self.relay = relay

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Worker) -> None:
        threads = worker.worker_threads  # the CLI's --threads, as dramatiq itself parsed it
        # One connection per thread, and one for the event relay's pass.
        size = threads + (1 if self.relay is not None else 0)
        self.deps.pool.resize(min_size=min(self.deps.pool.min_size, size), max_size=size)
        log.info("worker pool sized to %d threads", threads)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: object) -> None:
        if self.heartbeat is not None:
            self.heartbeat.start()
        if self.relay is not None:
            self.relay.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: object) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self.deps.sender is not None:
            self.deps.sender.close()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.deps.taken is not None:
            self.deps.taken.close()
        self.deps.invalidator.close()
        self.deps.invalidator.client.close()
        self.deps.pool.close()
        if self.deps.node is not None:
            self.deps.node.close()
