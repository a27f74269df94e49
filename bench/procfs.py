"""CPU time and memory of running processes, from Linux's /proc (the benchmarks' own accounting)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces): [1] the parent's
    pid, [11] and [12] the user and system CPU time in clock ticks. OSError once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU time used so far, from a process's stat fields."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def running() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process; one that exits while this reads is left out."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), stat(int(entry.name))
            except (OSError, IndexError):
                continue


def family(pid: int) -> set[int]:
    """`pid` and every descendant (granian and dramatiq fork their workers)."""
    parents = {member: int(fields[1]) for member, fields in running()}
    members, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in members:
                members.add(child)
                frontier.append(child)
    return members


def usage(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds used so far) of `pid` and its descendants."""
    rss, cpu = 0, 0.0
    for member in family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            fields = stat(member)
        except OSError:
            continue  # exited between the listing and the read
        rss += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        cpu += cpu_seconds(fields)
    return rss, cpu
