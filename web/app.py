"""The Flask application factory.

Served by granian, which imports this module and calls `create_app()` in each worker process, so
the PostgreSQL pool and the Redis client are made after the fork, once per process:

    granian --interface wsgi --factory web.app:create_app --host 0.0.0.0 --port $PORT \
        --workers 2 --blocking-threads 4 --backpressure 4 --no-ws --log-level warning
"""

from __future__ import annotations

import logging

from flask import Flask
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.cache import PageCache, create_cache_client
from ledger.config import Settings, load_settings
from ledger.db import create_pool
from ledger.logs import setup_logging
from web.directory import AccountDirectory
from web.errors import register_error_handlers
from web.resources import Resources
from web.responses import OrjsonProvider

log = logging.getLogger(__name__)

# Per process. granian runs the views on its blocking threads (4 per worker in the Procfile), and a
# view holds at most one connection, so more would sit idle: the pool is sized to the request threads
# (psycopg-pool docs: connections beyond the threads that can use them only hold server memory).
WEB_POOL_SIZE = 4

# Server-side settings for the web's sessions: timestamps in UTC (so JSON carries "Z"), no query
# left running after its client has long gone, and no writes by accident.
_SESSION_OPTIONS = "-c TimeZone=UTC -c statement_timeout=5000 -c default_transaction_read_only=on"


def create_app(settings: Settings | None = None) -> Flask:
    if settings is None:
        settings = load_settings()
    setup_logging(settings.log_level)
    if not settings.cursor_secrets:
        log.warning("CURSOR_SECRET is not set: cursors are signed with the development key; set it in production")

    app = Flask(__name__, static_folder=None)  # an API: no /static/ route
    app.json = OrjsonProvider(app)

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
    app.extensions["ledger"] = Resources(
        settings=settings,
        pool=pool,
        pages=PageCache(client, local_ttl=settings.cache_local_ttl),
        accounts=AccountDirectory(pool),
    )

    # Imported here so that importing web.app stays cheap and free of side effects.
    from web.deadletters import bp as deadletters_bp
    from web.health import bp as health_bp
    from web.openapi import bp as openapi_bp
    from web.records import bp as records_bp
    from web.summary import bp as summary_bp

    for blueprint in (records_bp, summary_bp, deadletters_bp, health_bp, openapi_bp):
        app.register_blueprint(blueprint)
    if settings.bench_routes:
        from web.bench import bp as bench_bp

        app.register_blueprint(bench_bp)
    register_error_handlers(app)
    return app


def close_app(app: Flask) -> None:
    """Release the process's pool and Redis connections (tests make one app per test)."""
    res: Resources = app.extensions["ledger"]
    res.pages.close()
    res.pool.close()


def _web_conninfo(url: str) -> str:
    options = conninfo_to_dict(url).get("options")
    return make_conninfo(url, options=f"{options} {_SESSION_OPTIONS}" if options else _SESSION_OPTIONS)
