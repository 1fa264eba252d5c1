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
time, so a reused pid is never hit), then any worker a recorded raylet started since the last record
(``RAY_RAYLET_PID`` in its environment: a worker spawned in the last instants; the agents are recorded
long before, and their environment is not to be trusted once they have renamed themselves), and exit. It ignores SIGINT (a terminal's Ctrl-C is the driver's to
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


def record(root: int, markers: list[str], tracked: dict[int, tuple[int, str]]) -> None:
    """Add ``root``'s descendants that look like Ray's (a marker in the command line) to ``tracked``:
    pid -> (start time, program)."""
    me = os.getpid()
    for pid, start in descendants(root).items():
        if pid != me and pid not in tracked:
            cmd = _cmdline(pid)
            if any(m in cmd for m in markers):
                tracked[pid] = (start, cmd.split(" ", 1)[0])


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except OSError:
        return False


def _raylet_children(raylets: dict[int, int], markers: list[str]) -> list[int]:
    """Live processes that a recorded raylet started (``RAY_RAYLET_PID`` in their environment, started
    after it, a marker in their command line), wherever they were re-parented."""
    keys = {f"RAY_RAYLET_PID={pid}".encode(): start for pid, start in raylets.items()}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:  # (a process that renamed itself may have written over the start of its environment)
            env = Path(f"/proc/{entry.name}/environ").read_bytes() + b"\0"
        except OSError:
            continue
        st = _stat(entry.name)
        born_after = [start for key, start in keys.items() if key + b"\0" in env]
        if st is not None and born_after and st[1] >= born_after[0] and \
                any(m in _cmdline(int(entry.name)) for m in markers):
            found.append(int(entry.name))
    return found


def reap(tracked: dict[int, tuple[int, str]], markers: list[str] = ()) -> list[int]:
    """SIGKILL every recorded process still alive (same pid and start time), then whatever a recorded
    raylet started since the last record (a worker it had just spawned); the pids signalled."""
    hit = [pid for pid, (start, _) in tracked.items()
           if (st := _stat(str(pid))) is not None and st[1] == start and _kill(pid)]
    raylets = {pid: start for pid, (start, program) in tracked.items() if os.path.basename(program) == "raylet"}
    if raylets and markers:
        hit += [pid for pid in _raylet_children(raylets, list(markers)) if pid not in hit and _kill(pid)]
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
    tracked: dict[int, tuple[int, str]] = {}
    while True:
        record(driver, markers, tracked)
        if gone.wait(POLL_S):
            break
    reap(tracked, markers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
