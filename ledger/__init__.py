"""The shared package: what more than one process kind uses.

- `ledger.config`, `ledger.domain`: settings read once from the environment; the domain types.
- `ledger.chain`: talking to a TRON node and reading what it says.
- `ledger.store`: PostgreSQL and the Redis cache.
- `ledger.coordination`: the message contract, the request budget, the lease, recovery.
- `ledger.ops`: the `ledger` command, process files, logs, metrics.
"""
