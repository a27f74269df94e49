"""`python -m ledger.ops.demo reset [--history]`: empty the demo's database and Redis DBs, migrate,
and add the demo's pool accounts (scripts/run, demo mode).

The demo's simulator keeps its chain in memory and makes it anew at each start; a database kept
from an earlier run holds a checkpoint past the new chain's head, and its Redis queues hold
operations of a chain that no longer exists. So the demo runs on stores of its own, emptied at each
start. The database is refused unless its name says `demo`: this drops whatever DATABASE_URL names.

`--history`: the simulator's accounts held nothing before its first block (no SIM_OPENING_STATE)
and the listener reads from that block, so their positions come from their whole history: marked
so, the listener takes no opening snapshot of them (a block's wait per account at every start).
"""

from __future__ import annotations

import sys

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from ledger.chain.snapshot import mark_history
from ledger.config import load_settings
from ledger.store.accounts import add_accounts
from ledger.store.db import migrate, recreate_database


def reset(history: bool) -> int:
    settings = load_settings()
    name = str(conninfo_to_dict(settings.database_url).get("dbname") or "")
    if "demo" not in name:
        print(f"demo reset: refused: database {name!r} is not a demo database (its name must contain 'demo')")
        return 2
    recreate_database(settings.database_url)
    print(f"demo reset: database {name} dropped and created empty")
    for url in (settings.redis_url, settings.cache_redis_url):
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        print(f"demo reset: Redis DB {url.rsplit('/', 1)[-1]} at {url.split('@')[-1].split('/')[2]} emptied")
    applied = migrate(settings.database_url)
    print(f"demo reset: {len(applied)} migration(s) applied")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        added = add_accounts(conn, list(settings.pool_accounts), label="demo")
        if history:
            for account in added:
                mark_history(conn, account.address)
    whence = "positions from their whole history on the simulator's chain" if history else "opening snapshots"
    print(f"demo reset: {len(added)} pool account(s) added ({whence})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["reset"], ["reset", "--history"]):
        print("usage: python -m ledger.ops.demo reset [--history]", file=sys.stderr)
        return 2
    return reset(history="--history" in args)


if __name__ == "__main__":
    sys.exit(main())
