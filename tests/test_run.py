"""`scripts/run` as a user runs it: its output redirected to a file, stopped, started again.

The demo (no TRON_NODE_URL) on a database and Redis DBs of the test's own: every line of the output
is one process's whole line with its name in front, nothing is doubled, a stop exits 0 (every
process "exit status 0"), and a second start has new records within 30 s (the simulator's chain is
made anew, so the demo resets its stores rather than wait behind an old checkpoint).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from harness.procs import ROOT
from harness.servers import free_port
from ledger.config import Settings

PROCESSES = ("run", "supervisord", "web", "listener", "worker", "scheduler", "simulator")
LINE = re.compile(rf"^({'|'.join(PROCESSES)}) *\| (.*)$")


def records(url: str, since: datetime) -> int:
    """Records stored after `since` (the database's clock)."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM stake_records WHERE created_at > %s", (since,)).fetchone()
    except psycopg.Error:
        return 0  # not made yet, or being reset
    return int(row[0]) if row else 0


def database_now(url: str) -> datetime:
    with psycopg.connect(make_conninfo(url, dbname="postgres")) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def run_once(env: dict[str, str], out: Path, db_url: str, first: bool) -> float:
    """Start scripts/run, wait for records, stop it with SIGTERM; the seconds records took."""
    since = database_now(db_url)
    started = time.monotonic()
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "run")], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            deadline = started + (180 if first else 60)  # the first may install requirements
            while records(db_url, since) == 0:
                assert proc.poll() is None, out.read_text()[-3000:]
                assert time.monotonic() < deadline, out.read_text()[-3000:]
                time.sleep(0.5)
            took = time.monotonic() - started
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0, out.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return took


def check_output(text: str) -> None:
    lines = text.splitlines()
    assert lines
    unparsed = [line for line in lines if not LINE.match(line)]
    assert not unparsed, unparsed[:10]
    by_process = Counter(LINE.match(line).group(1) for line in lines)  # type: ignore[union-attr]
    assert {"run", "supervisord", "web", "listener", "worker", "scheduler", "simulator"} <= set(by_process)
    # supervisord's lines once each (they carry a time to the millisecond: a repeat is a double)
    supervisord = [line for line in lines if line.startswith("supervisord ")]
    doubled = [line for line, n in Counter(supervisord).items() if n > 1]
    assert not doubled, doubled
    # A clean stop: every process stopped with exit status 0, none "not expected".
    stopped = re.findall(r"stopped: (\w+) \(exit status (\d+)\)", text)
    assert {name for name, _ in stopped} == {"web", "listener", "worker", "scheduler", "simulator"}, stopped
    assert all(code == "0" for _, code in stopped), stopped
    assert "not expected" not in text
    assert "node behind the checkpoint" not in text


@pytest.mark.slow
def test_run_twice_in_a_row_with_its_output_in_a_file(settings: Settings, tmp_path: Path) -> None:
    redis_base = settings.redis_url.rsplit("/", 1)[0]
    db_url = make_conninfo(settings.database_url, dbname="ledger_h_run_demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRON_", "SIM_", "DEMO_"))}
    env.update(
        {
            "DEMO_DATABASE_URL": db_url,
            "DEMO_REDIS_URL": f"{redis_base}/6",
            "DEMO_CACHE_REDIS_URL": f"{redis_base}/7",
            # Never the shared defaults, whatever the run command makes of them.
            "DATABASE_URL": db_url,
            "REDIS_URL": f"{redis_base}/6",
            "CACHE_REDIS_URL": f"{redis_base}/7",
            "PORT": str(free_port()),
            "SIM_PORT": str(free_port()),
            "RUN_DIR": str(tmp_path / "run"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    first = run_once(env, tmp_path / "first.log", db_url, first=True)
    check_output((tmp_path / "first.log").read_text())
    second = run_once(env, tmp_path / "second.log", db_url, first=False)
    text = (tmp_path / "second.log").read_text()
    check_output(text)
    assert "demo reset: database ledger_h_run_demo dropped and created empty" in text
    print(f"records {first:.1f} s after the first start, {second:.1f} s after the second")
    assert second <= 30, f"no new records within 30 s of the second start ({second:.1f} s)"
