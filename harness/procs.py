"""Start the project's real processes (simulator, listener, workers, web) for tests and benchmarks."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """A child process in its own process group, with its output kept for assertions and logs."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so kill() reaches the dramatiq worker children too
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        # A test or benchmark that dies half-way must not leave workers consuming behind it.
        atexit.register(self.kill)

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
            if os.environ.get("TEST_SHOW_PROC_OUTPUT"):
                print(f"[{self.name}] {line}", end="", file=sys.stderr)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None and seen == len(self.lines):
                    tail = "\n".join(self.lines[-30:])
                    raise TimeoutError(f"{self.name}: no line matching {pattern!r}; last output:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM to the group), then SIGKILL if it lingers."""
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)


def _die_with_parent() -> None:
    # A test run killed from outside (a timeout's SIGTERM runs no atexit) must not leave a
    # listener behind that would take the lease in the next run's database.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def tcp_ports(pid: int) -> set[int]:
    """The local ports of process `pid`'s TCP sockets (IPv4 and IPv6), from /proc: how a test finds
    the PostgreSQL sessions a process holds (pg_stat_activity.client_port) to drop them, as a
    network partition would."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
