"""A local TRON node simulator: an in-memory chain served over the java-tron HTTP API.

It is a dev/test tool. It renders what a real java-tron node renders (shapes copied from the
real samples in tests/fixtures/tron/) and knows its own ground truth (`/sim/truth`), so the
ledger product can be tested end to end without a real node.

It deliberately imports nothing from the product packages (ledger, workers, listener, web) and
has its own base58check, so a product bug cannot hide behind a shared implementation.

Run it with `python -m simulator --help`.
"""
