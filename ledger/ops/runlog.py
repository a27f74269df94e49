"""`python -m ledger.ops.runlog RUNDIR`: the run command's one log stream.

supervisord writes each process's output to a file of its own (RUNDIR/<name>.log) and its own lines
to RUNDIR/supervisord.log; this follows them all and prints each complete line once, prefixed with
its process's name, on its own stdout. One writer, whole lines: redirected to a file the stream
stays readable (processes that each opened /dev/stdout wrote over each other at their own offsets,
and supervisord's lines came twice, once from its log file and once from its echo in the foreground).

It stops on SIGTERM after printing what the files hold by then (the run command sends it once
supervisord has exited); SIGINT (Ctrl-C reaches the whole foreground group) is left to supervisord.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

POLL_SECONDS = 0.2
_WIDTH = 11  # "supervisord"


@dataclass
class _Followed:
    path: Path
    name: str
    offset: int = 0
    inode: int | None = None
    partial: bytes = b""


class Follower:
    def __init__(self, rundir: Path, out: TextIO) -> None:
        self.rundir = rundir
        self.out = out
        self._files: dict[Path, _Followed] = {}

    def poll(self, final: bool = False) -> int:
        """Print the complete lines added since the last poll (and, `final`, a last unfinished one)."""
        printed = 0
        for path in sorted(self.rundir.glob("*.log")):
            followed = self._files.setdefault(path, _Followed(path, path.name.removesuffix(".log")))
            printed += self._read(followed, final)
        self.out.flush()
        return printed

    def _read(self, followed: _Followed, final: bool) -> int:
        try:
            stat = followed.path.stat()
            if followed.inode != stat.st_ino or stat.st_size < followed.offset:
                # Rotated by supervisord (a new file under the name) or truncated: from its start.
                followed.inode, followed.offset, followed.partial = stat.st_ino, 0, b""
            if stat.st_size == followed.offset and not (final and followed.partial):
                return 0
            with followed.path.open("rb") as handle:
                handle.seek(followed.offset)
                data = handle.read()
        except FileNotFoundError:
            return 0
        followed.offset += len(data)
        *lines, followed.partial = (followed.partial + data).split(b"\n")
        if final and followed.partial:
            lines.append(followed.partial)
            followed.partial = b""
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            self.out.write(f"{followed.name:<{_WIDTH}} | {text}\n")
        return len(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ledger.ops.runlog RUNDIR", file=sys.stderr)
        return 2
    follower = Follower(Path(args[0]), sys.stdout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while not stop.wait(POLL_SECONDS):
        follower.poll()
    follower.poll(final=True)
    return 0


if __name__ == "__main__":
    # A closed stdout (the reader of a pipe went away) ends the stream, quietly.
    try:
        sys.exit(main())
    except BrokenPipeError:
        os._exit(0)
