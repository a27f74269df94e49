"""PostgreSQL access: pools, the migration runner and database creation.

Pools are made by each process at start (after any fork), never at import.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Any constant works; it only has to be the same for every process running migrations.
_MIGRATION_LOCK = 0x5354414B45  # "STAKE"
RECONNECT_TIMEOUT = 2.0


def check_socket(conn: psycopg.Connection) -> None:
    """The pool's check of a connection it hands out, without a round trip: read what the socket
    holds without waiting, and raise if the server has closed it (a restart or a terminated
    backend closes its sockets, so the EOF is there at once). A statement's round trip on every
    checkout costs the web a PostgreSQL context switch per request for the same answer."""
    pgconn = conn.pgconn
    pgconn.consume_input()  # raises OperationalError on a closed socket
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")


def create_pool(
    url: str,
    *,
    max_size: int = 8,
    min_size: int = 1,
    name: str = "ledger",
    autocommit: bool = False,
    check: bool = True,
    timeout: float = 5.0,
) -> ConnectionPool:
    """A psycopg pool, opened without waiting for PostgreSQL.

    `check` tests each connection as it is handed out (`check_socket`, no round trip): without it
    the first use after a PostgreSQL restart fails on a dead socket. Callers that retry anyway
    (workers) skip it.
    `timeout`: how long a caller waits for a connection before PoolTimeout.
    """
    pool = ConnectionPool(
        url,
        min_size=min(min_size, max_size),
        max_size=max_size,
        name=name,
        open=False,
        check=check_socket if check else None,
        timeout=timeout,
        # A background reconnection gives up after this, and the next caller that needs a
        # connection starts a fresh attempt at once. A long timeout kept one attempt alive with a
        # doubling delay (1, 2, 4 ... 64 s), so the pool came back up to a minute after PostgreSQL.
        reconnect_timeout=RECONNECT_TIMEOUT,
        kwargs={"autocommit": autocommit, "connect_timeout": 3},
    )
    # Opening does not wait: a process may start while PostgreSQL is still down and catch up
    # (its first callers start the connection attempts again; see reconnect_timeout).
    pool.open(wait=False)
    return pool


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True if it was created."""
    params = conninfo_to_dict(url)
    dbname = params.get("dbname") or "postgres"
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
        log.info("created database %s", dbname)
        return True


def recreate_database(url: str) -> None:
    """Drop the database named in `url` (closing its connections) and create it empty."""
    name = conninfo_to_dict(url).get("dbname") or "postgres"
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))


def migrate(url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the numbered `sql/NNN_*.sql` files not applied yet, in order; return their names.

    Idempotent and safe to run from several processes at once (an advisory lock serialises them).
    """
    files = sorted(p for p in sql_dir.glob("*.sql") if p.name[:3].isdigit())
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for path in files:
                if path.name in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.name,))
                log.info("applied migration %s", path.name)
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
