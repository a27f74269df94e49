"""The worker process: `dramatiq workers.main:setup --processes 2 --threads 4`.

The dramatiq CLI imports this module and calls `setup()` in each worker process, after the fork,
so that is where this process's broker, PostgreSQL pool and cache client are made; importing the
module creates nothing.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq import Worker
from dramatiq.middleware import Middleware, Retries

from ledger.cache import create_cache_client
from ledger.config import Settings, load_settings
from ledger.db import create_pool
from ledger.logs import setup_logging
from ledger.queue import background_queue, check_broker_durability, create_broker
from workers.actors import Deps, register_actors
from workers.deadletters import DeadLetters

log = logging.getLogger(__name__)

# Invalidation is one round trip; the web's tens-of-ms read timeout would turn a brief stall into
# needless retries here. (No client-side retries: a failure raises and Dramatiq retries the message.)
CACHE_SOCKET_TIMEOUT = 2.0


def setup() -> None:
    """Entry point for the dramatiq CLI (`workers.main:setup`): build and install this process's broker."""
    settings = load_settings()
    setup_logging(settings.log_level)
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
    # One connection per worker thread (the pool is resized to the thread count at worker boot):
    # an actor holds one for its whole transaction. Autocommit: a one-statement upsert is its own
    # transaction (see workers.persist). No check on checkout: a connection that died with
    # PostgreSQL fails its message, which is retried.
    pool = create_pool(
        settings.database_url, max_size=settings.db_pool_size, name="worker", autocommit=True, check=False
    )
    cache = create_cache_client(settings.cache_redis_url, CACHE_SOCKET_TIMEOUT)
    deps = Deps(settings=settings, pool=pool, cache=cache)
    # Before Retries in the list = after it in the reversed after_* hooks (see workers.deadletters).
    broker.add_middleware(DeadLetters(pool), before=Retries)
    broker.add_middleware(_CloseOnShutdown(deps))
    register_actors(broker, deps)
    return broker, deps


class _CloseOnShutdown(Middleware):
    """Size the pool to the worker's threads at boot; close it and the cache client at shutdown."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Worker) -> None:
        threads = worker.worker_threads  # the CLI's --threads, as dramatiq itself parsed it
        self.deps.pool.resize(min_size=min(self.deps.pool.min_size, threads), max_size=threads)
        log.info("worker pool sized to %d threads", threads)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: object) -> None:
        self.deps.pool.close()
        self.deps.cache.close()
