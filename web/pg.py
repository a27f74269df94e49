"""Borrowing a PostgreSQL connection for a request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool


@contextmanager
def read_connection(pool: ConnectionPool, timeout: float | None = None) -> Iterator[psycopg.Connection]:
    """A pooled connection in autocommit mode.

    The API only reads, and a single statement needs no transaction: autocommit saves the BEGIN
    and COMMIT round trips around every page query. (The pool keeps the flag with the
    connection, so it is set once per connection.) Code that wants one snapshot for several
    statements opens `conn.transaction()` itself.
    """
    with pool.connection(timeout=timeout) as conn:
        if not conn.autocommit:
            conn.autocommit = True
        yield conn
