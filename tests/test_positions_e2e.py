"""Positions end to end: every summary figure equals the simulator's account state (see
tests/positions_check.py; `python -m tests.positions_check --blocks 10000` is the long run)."""

from __future__ import annotations

import pytest

from harness.procs import Proc
from ledger.config import Settings
from tests.positions_check import run


@pytest.mark.slow
def test_summaries_equal_the_chains_account_state_through_lock_expiries_and_forks(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    comparisons = run(settings, procs, blocks=300, chunk=60, fork_rate=0.05)
    assert comparisons == 6
