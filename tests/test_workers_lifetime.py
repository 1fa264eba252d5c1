"""Training workers never outlive the run: kill -9 of the main process, Ctrl-C (Linux: /proc)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# A run long enough to be caught with its two workers busy.
SCRIPT = """
from pwffsim.scenario import load_scenario
from pwffsim.sim.engine import Simulation
sc = load_scenario(None, overrides=["execution.executor='process'", "execution.workers=2", "fl.rounds=200",
                                    "devices.count=6", "fl.clients_per_round=4", "pwff.metric_prompts=0",
                                    "pwff.align_steps=0", "fl.final_evaluation='none'"])
Simulation(sc).run()
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat: the parent pid
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_with_workers(tmp_path) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        # the pool's workers are python processes (the spawn helper, if any, is not one of them)
        workers = [c for c in _children(proc.pid)
                   if "multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
        if len(workers) >= 2:
            time.sleep(3)  # let them load the model and take jobs
            return proc, workers
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its workers started: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no worker processes appeared")


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_kill_9_of_the_main_process_leaves_no_worker(tmp_path):
    proc, workers = _start_with_workers(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_gone(workers, 10) == [], "workers survived the main process"


def test_ctrl_c_stops_the_pool(tmp_path):
    proc, workers = _start_with_workers(tmp_path)
    proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C would, to the main process
    for w in workers:  # and to the workers of its process group
        try:
            os.kill(w, signal.SIGINT)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    assert _wait_gone(workers, 10) == []
    err = proc.stderr.read()
    assert "KeyboardInterrupt" in err
    assert err.count("Traceback") == 1, err[-3000:]  # the main process's only: no worker printed one
