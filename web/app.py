"""The Flask application factory.

Served by granian, which imports this module and calls `create_app()` in each worker process, so
the PostgreSQL pool and the Redis client are made after the fork, once per process:

    granian --interface wsgi --factory web.app:create_app --host 0.0.0.0 --port $PORT \
        --workers 2 --blocking-threads 4 --backpressure 128 --http 1 --http1-header-read-timeout 5000 \
        --no-ws --log-level warning
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from flask import Flask
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.clocks import Clock
from ledger.config import Settings, load_settings
from ledger.coordination.queue import create_broker
from ledger.ops.logs import setup_logging
from ledger.store.cache import PageCache, create_cache_client
from ledger.store.db import create_pool
from web import guards, hot
from web.directory import AccountDirectory
from web.errors import register_error_handlers
from web.request import LedgerRequest
from web.resources import Resources
from web.responses import OrjsonProvider, send_whole

log = logging.getLogger(__name__)

# Per process. granian runs the views on its blocking threads (4 per worker in the Procfile), and a
# view holds at most one connection, so more would sit idle: the pool is sized to the request threads
# (psycopg-pool docs: connections beyond the threads that can use them only hold server memory).
WEB_POOL_SIZE = 4

# Server-side settings for the web's sessions: timestamps in UTC (so JSON carries "Z"), no query
# left running after its client has long gone, and no writes by accident.
_SESSION_OPTIONS = "-c TimeZone=UTC -c statement_timeout=5000 -c default_transaction_read_only=on"
# The admin API's sessions write (requeue, purge); few and rare, so a small pool of their own.
_ADMIN_SESSION_OPTIONS = "-c TimeZone=UTC -c statement_timeout=15000"
ADMIN_POOL_SIZE = 2
# The status page and /metrics read the broker's Redis: a dead one costs them this, not a hang.
BROKER_SOCKET_TIMEOUT = 2.0


def create_app(
    settings: Settings | None = None, *, clock: Clock = time.monotonic, sleep: Callable[[float], object] = time.sleep
) -> Flask:
    """The web app; `clock` times everything the process keeps for a while (pages and answers in
    memory, the cache's breaker, the account directory, the monitor's snapshot), a cache miss
    waiting for another request's fill and the event stream, whose polls wait with `sleep` (a test
    that moves `clock` moves it with its `sleep` too)."""
    if settings is None:
        settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, secrets=(settings.tron_api_key,))
    if not settings.cursor_secrets:
        log.warning("CURSOR_SECRET is not set: cursors are signed with the development key; set it in production")

    app = Flask(__name__, static_folder=None)  # an API: no /static/ route
    app.request_class = LedgerRequest
    app.json = OrjsonProvider(app)
    guards.install(app)  # before any route exists: the URL map's settings apply to rules as they are added

    size = max(1, min(WEB_POOL_SIZE, settings.db_pool_size))
    # A short wait for a connection: the pool has one per request thread, so a request only waits
    # when connections are being re-made, i.e. PostgreSQL is away; then a quick 503 beats a 5-s one.
    pool = create_pool(
        _web_conninfo(settings.database_url),
        max_size=size,
        min_size=size,
        name="web",
        timeout=settings.web_db_timeout,
    )
    client = create_cache_client(settings.cache_redis_url, settings.cache_socket_timeout)
    broker_client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=BROKER_SOCKET_TIMEOUT, socket_connect_timeout=BROKER_SOCKET_TIMEOUT
    )
    admin_pool = None
    if settings.admin_token:
        admin_pool = create_pool(
            _web_conninfo(settings.database_url, _ADMIN_SESSION_OPTIONS),
            max_size=ADMIN_POOL_SIZE,
            min_size=1,
            name="web-admin",
            autocommit=True,
        )
    app.extensions["ledger"] = Resources(
        settings=settings,
        pool=pool,
        pages=PageCache(client, local_ttl=settings.cache_local_ttl, clock=clock, sleep=sleep),
        accounts=AccountDirectory(pool, clock=clock),
        broker=create_broker(settings.effective_broker_url),
        broker_redis=broker_client,
        admin_pool=admin_pool,
        clock=clock,
        sleep=sleep,
    )

    # Imported here so that importing web.app stays cheap and free of side effects.
    from web.deadletters import bp as deadletters_bp
    from web.events import bp as events_bp
    from web.events import install as install_events
    from web.health import bp as health_bp
    from web.metrics import bp as metrics_bp
    from web.openapi import bp as openapi_bp
    from web.reclaimable import bp as reclaimable_bp
    from web.reconciliation import bp as reconciliation_bp
    from web.records import bp as records_bp
    from web.status import bp as status_bp
    from web.summary import bp as summary_bp

    for blueprint in (
        records_bp,
        summary_bp,
        deadletters_bp,
        health_bp,
        openapi_bp,
        metrics_bp,
        status_bp,
        reconciliation_bp,
        events_bp,
        reclaimable_bp,
    ):
        app.register_blueprint(blueprint)
    install_events(app.extensions)
    if settings.admin_token:
        # Without a token the admin routes do not exist at all (404), rather than exist and refuse.
        from web.admin import bp as admin_bp

        app.register_blueprint(admin_bp)
    if settings.bench_routes:
        from web.bench import bp as bench_bp

        app.register_blueprint(bench_bp)
    from web.paths import create_paths, install

    install(app, create_paths(settings, pool))
    hot.install(app)  # after web.guards' checks (installed first)
    register_error_handlers(app)
    app.after_request(send_whole)
    return app


def close_app(app: Flask) -> None:
    """Release the process's pool and Redis connections (tests make one app per test)."""
    from web.paths import close_paths

    close_paths(app.extensions["paths"])
    res: Resources = app.extensions["ledger"]
    res.pages.close()
    res.pool.close()
    res.broker.close()
    res.broker_redis.close()
    if res.admin_pool is not None:
        res.admin_pool.close()


def _web_conninfo(url: str, session_options: str = _SESSION_OPTIONS) -> str:
    options = conninfo_to_dict(url).get("options")
    return make_conninfo(url, options=f"{options} {session_options}" if options else session_options)
