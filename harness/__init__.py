"""The harness the tests and the benchmarks share: real services started on free ports (PostgreSQL,
Redis, RabbitMQ, the simulator, web, listener and workers), process supervision, a TCP proxy for
faults, the Chromium driver and the ledger-vs-truth comparisons."""
