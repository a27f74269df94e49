"""Webhooks end to end through a receiver outage (harness/webhook_scenario.py): 1,000 operations
flow through the listener and workers while the receiver is down, then it answers 500 to 10% of
the requests and loses the answer of 2%. Every event arrives, signed, none missing, and the only
duplicates are re-sends of requests whose answer was lost.

The outage is WEBHOOK_TEST_OUTAGE_SECONDS long (default 8 s); bench/webhooks.py runs it for minutes.
"""

from __future__ import annotations

import os

import pytest

from harness import webhook_scenario
from harness.procs import Proc
from ledger.config import Settings

OUTAGE = float(os.environ.get("WEBHOOK_TEST_OUTAGE_SECONDS", "8"))


@pytest.mark.slow
def test_every_event_reaches_a_receiver_that_was_down_and_flaky(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    outcome = webhook_scenario.run(settings, env, procs, outage=OUTAGE, operations=1_000)
    print(outcome)
    assert outcome.operations >= 1_000
    assert outcome.events >= outcome.operations  # every record gave at least one event
    assert outcome.problems() == []
    # The receiver's faults were met: refusals retried, lost answers re-sent
    assert outcome.refused > 0 and outcome.lost > 0
    assert outcome.duplicates == outcome.lost  # each lost answer's event came again, and nothing else did
