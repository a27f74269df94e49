"""The worker process: `dramatiq workers.main:setup --processes 2 --threads 4`.

The dramatiq CLI imports this module and calls `setup()` in each worker process, after the fork,
so that is where this process's broker, PostgreSQL pool and cache client are made; importing the
module creates nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries

from ledger.cache import create_cache_client
from ledger.config import Settings, load_settings
from ledger.db import create_pool
from ledger.logs import setup_logging
from ledger.queue import create_broker
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
    threads = cli_threads(sys.argv) or settings.db_pool_size
    broker, _ = create_worker_broker(settings, threads=threads)
    dramatiq.set_broker(broker)
    log.info("worker ready on queue %r (%d threads)", settings.queue_name, threads)


def create_worker_broker(settings: Settings, *, threads: int) -> tuple[RedisBroker, Deps]:
    """A broker with the dead-letter middleware and both actors, plus the dependencies they use."""
    broker = create_broker(settings.redis_url)
    # One connection per worker thread: an actor holds one for its whole transaction.
    # Autocommit: a one-statement upsert is its own transaction (see workers.persist). No check
    # on checkout: a connection that died with PostgreSQL fails its message, which is retried.
    pool = create_pool(settings.database_url, max_size=threads, name="worker", autocommit=True, check=False)
    cache = create_cache_client(settings.cache_redis_url, CACHE_SOCKET_TIMEOUT)
    deps = Deps(settings=settings, pool=pool, cache=cache)
    # Before Retries in the list = after it in the reversed after_* hooks (see workers.deadletters).
    broker.add_middleware(DeadLetters(pool), before=Retries)
    broker.add_middleware(_CloseOnShutdown(deps))
    register_actors(broker, deps)
    return broker, deps


def cli_threads(argv: Sequence[str]) -> int | None:
    """The `--threads`/`-t` value the dramatiq CLI was started with (its children inherit argv)."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--threads", "-t") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-t") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return None


class _CloseOnShutdown(Middleware):
    """Close the pool and cache client once the worker threads have stopped."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: object) -> None:
        self.deps.pool.close()
        self.deps.cache.close()
