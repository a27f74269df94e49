"""A local TRON node simulator: an in-memory chain served over the java-tron HTTP API.

It is a dev/test tool. It renders what a real java-tron node renders (shapes copied from the
real samples in tests/fixtures/tron/) and knows its own ground truth (`/sim/truth`), so the
ledger product can be tested end to end without a real node.

It keeps each account's stake state by java-tron's actuator rules (stake_state), replayed per
block for the account endpoints (state_view, account_api) and TronGrid's v1 account routes
(trongrid); accounts can start with stake from before the first block (opening), and tests can
script exact blocks (POST /sim/submit) and read the true state at any block (/sim/account-state).

It deliberately imports nothing from the product packages (ledger, workers, listener, web) and
has its own base58check, so a product bug cannot hide behind a shared implementation.

Run it with `python -m simulator --help`.
"""
