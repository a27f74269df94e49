"""The fault suite's CI setting (bench/faults.py, `scripts/faults`): a part of the short setting,
each scenario ending with the zero-loss check against the simulator's truth."""

from __future__ import annotations

import io

from bench.faults import SETTINGS, run_suite

# listener-kill-supervised also runs in tests/test_supervise.py; the rest are in `scripts/faults`.
CI_SCENARIOS = ["worker-child-kill", "worker-parent-kill", "pg-stop-short", "cache-hang", "rabbitmq-restart"]


def test_fault_suite_short_setting_loses_nothing() -> None:
    out = io.StringIO()
    rows = run_suite(SETTINGS["short"], CI_SCENARIOS, out=out)
    print(out.getvalue())
    assert [r.scenario for r in rows] == CI_SCENARIOS
    for row in rows:
        assert row.clean, f"{row.scenario}: {row} {row.examples}"
        assert row.recover is not None, f"{row.scenario} did not recover"
