"""The local Ray's reaper: a tiny watcher process that kills what is left of a local Ray once its driver is gone.

Ray's own fate sharing ends the GCS, the raylet and the workers when the driver that started them
dies, even by ``kill -9``; but the raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``)
notice their raylet's death and then hang for a minute or more on their way out.
:class:`~pwffsim.sim.ray_executor.RayExecutor` therefore starts this script (stdlib only, no package
import: it starts in milliseconds) before ``ray.init`` when it starts Ray itself:

    python ray_reaper.py DRIVER_PID MARKER [MARKER ...]

Every :data:`POLL_S` it records the driver's descendants whose command line contains a marker (the
``ray`` package's directory, ``ray::``), with their start times. The driver holds the write end of the
script's stdin; end of file (the driver closed it after ``ray.shutdown()``, or the driver is gone,
whatever killed it) makes the script ``SIGKILL`` every recorded process still alive (same pid and start
time, so a reused pid is never hit) and exit. It ignores SIGINT (a terminal's Ctrl-C is the driver's to
handle) and runs in its own session (a kill of the driver's process group does not take it away
before it has reaped). Linux only (``/proc``).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

#: How often the driver's descendants are recorded (s).
POLL_S = 0.25


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])  # fields 4 and 22 of proc(5)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(entry.name)
            if st is not None:
                children.setdefault(st[0], []).append((int(entry.name), st[1]))
    out, todo = {}, [root]
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


def record(root: int, markers: list[str], tracked: dict[int, int]) -> None:
    """Add ``root``'s descendants that look like Ray's (a marker in the command line) to ``tracked``."""
    me = os.getpid()
    for pid, start in descendants(root).items():
        if pid != me and pid not in tracked and any(m in _cmdline(pid) for m in markers):
            tracked[pid] = start


def reap(tracked: dict[int, int]) -> list[int]:
    """SIGKILL every recorded process still alive (same start time); the pids signalled."""
    hit = []
    for pid, start in tracked.items():
        st = _stat(str(pid))
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                hit.append(pid)
            except OSError:
                pass
    return hit


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver, markers = int(argv[0]), argv[1:]
    gone = threading.Event()

    def wait_for_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        gone.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    tracked: dict[int, int] = {}
    while True:
        record(driver, markers, tracked)
        if gone.wait(POLL_S):
            break
    reap(tracked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
