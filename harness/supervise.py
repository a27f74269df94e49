"""supervisord on a config generated from a Procfile (ledger.ops.procfile), as `scripts/run` runs it,
for tests and the fault suite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from harness.procs import ROOT, Proc, python
from harness.stack import wait_until
from ledger.ops.procfile import parse_procfile, write_supervisord_conf

BIN = Path(sys.executable).parent


class Supervisor:
    def __init__(self, procfile: str, rundir: Path, env: Mapping[str, str]) -> None:
        rundir.mkdir(parents=True, exist_ok=True)
        (rundir / "Procfile").write_text(procfile)
        self.programs = [p.name for p in parse_procfile(procfile)]
        for old in rundir.glob("*.log"):
            old.unlink()
        self.conf = write_supervisord_conf(rundir / "Procfile", rundir, ROOT)
        self.env = {**env, "PATH": f"{BIN}:/usr/bin:/bin"}
        self.supervisord = Proc("supervisord", [str(BIN / "supervisord"), "-c", str(self.conf)], self.env)
        # The one stream scripts/run prints (every process's lines, supervisord's own among them).
        self.proc = Proc("run", python("-m", "ledger.ops.runlog", str(rundir)), self.env)

    def pid(self, name: str) -> int:
        """The pid of program `name`, 0 when it is not running."""
        out = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), "pid", name], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else 0

    def control(self, action: str, name: str) -> None:
        """`supervisorctl <action> <name>`: stop or start one program (it waits for the program)."""
        argv = [str(BIN / "supervisorctl"), "-c", str(self.conf), action, name]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def running(self, name: str, timeout: float = 60) -> int:
        wait_until(lambda: self.pid(name) > 0, timeout, f"{name} to run")
        return self.pid(name)

    def stop(self) -> None:
        self.supervisord.stop(timeout=40)
        self.proc.stop(timeout=10)

    def kill(self) -> None:
        """Stop everything at once (SIGKILL), for a run whose results are taken: a graceful stop
        takes supervisord's programs one after the other, seconds each. supervisord goes first, so
        it starts nothing again; it gives each program a process group of its own, which takes the
        program's children with it."""
        pids = [self.pid(name) for name in self.programs]
        self.supervisord.kill()
        for pid in pids:
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.supervisord.popen.wait(10)
        self.proc.stop(timeout=10)
