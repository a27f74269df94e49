"""The fault suite's CI setting (`scripts/faults`, bench/faults.py): a part of the short setting, each
scenario ending with the zero-loss check against the simulator's truth. The suite runs as the operator
runs it, a script, and this test reads the rows it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.procs import ROOT

# listener-kill-supervised also runs in tests/test_supervise.py; the rest are in `scripts/faults`.
CI_SCENARIOS = [
    "worker-child-kill",
    "worker-parent-kill",
    "broker-restart-no-aof",
    "pg-stop-short",
    "cache-hang",
    "rabbitmq-restart",
]
COMPLETE_TARGET = 30.0  # seconds from a fault's end to a complete ledger (bench/faults.py)
# cache-hang's "complete" includes draining the backlog it builds on purpose: a measure of ingest
# speed on the machine at hand, not of recovery.
BACKLOG_SCENARIOS = {"cache-hang"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fault_suite_short_setting_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "-m", "bench.faults", "--setting", "short", "--only", ",".join(CI_SCENARIOS)]
    done = subprocess.run([*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, done.stderr[-4000:])
    rows = json.loads(out.read_text())
    assert [r["scenario"] for r in rows] == CI_SCENARIOS
    for row in rows:
        assert row["clean"], f"{row['scenario']}: {row}"
        assert row["recover"] is not None, f"{row['scenario']} did not recover"
        assert row["complete"] is not None, f"{row['scenario']}: the ledger was never complete"
        if row["scenario"] not in BACKLOG_SCENARIOS:
            assert row["complete"] <= COMPLETE_TARGET, f"{row['scenario']}: complete after {row['complete']:.1f} s"
    assert done.returncode == 0, done.stdout
