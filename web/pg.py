"""Borrowing a PostgreSQL connection for a request, and answering fast while PostgreSQL is away.

A request waits at most the pool's timeout (WEB_DB_TIMEOUT) for a connection. Once one has failed
(no connection in time, or a connection error), the requests after it wait only FAST_WAIT for
as long as failures go on, plus FAST_FAIL_SECONDS: during an outage every answer (a 503, or the
figures that need no database) comes at once instead of after the whole timeout each, and a
connection the pool re-made when PostgreSQL came back is taken within FAST_WAIT.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

FAST_FAIL_SECONDS = 1.0
FAST_WAIT = 0.05
# Kept on the pool object itself: the state belongs to the pool (one per process, made by
# create_app), not to this module.
_FAILED_AT = "_ledger_failed_at"


@contextmanager
def read_connection(pool: ConnectionPool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A pooled connection in autocommit mode.

    The API only reads, and a single statement needs no transaction: autocommit saves the BEGIN
    and COMMIT round trips around every page query. (The pool keeps the flag with the
    connection, so it is set once per connection.) Code that wants one snapshot for several
    statements opens `conn.transaction()` itself.
    """
    if time.monotonic() - getattr(pool, _FAILED_AT, -FAST_FAIL_SECONDS) < FAST_FAIL_SECONDS:
        timeout = FAST_WAIT if timeout is None else min(timeout, FAST_WAIT)
    try:
        with pool.connection(timeout=timeout) as conn:
            if not conn.autocommit:
                conn.autocommit = True
            yield conn
    except (PoolTimeout, psycopg.OperationalError):
        setattr(pool, _FAILED_AT, time.monotonic())
        raise
