"""The Ray executor (execution.executor = "ray"): same traces as in-process training, the broadcast part
sent once by reference, the handles, the missing extra, and no Ray process outliving its run.

The in-process tests share one local Ray session (the executors join it and leave it running); the
runs that start their own local Ray do it in a child process, watched through /proc.
"""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pwffsim.scenario import ScenarioError, load_scenario
from pwffsim.sim.builders import TrainJobs, build_executor, client_preferences, learner_specs
from pwffsim.sim.engine import Simulation
from pwffsim.sim.ray_reaper import descendants
from pwffsim.sim.state import ModelSplit, RunState

ROOT = Path(__file__).resolve().parents[1]
TINY = ["fl.rounds=3", "devices.count=6", "fl.clients_per_round=4", "pwff.metric_prompts=2", "pwff.align_steps=1"]
linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# A child run on its own local Ray (execution.address unset): ROUNDS and OUT filled in.
CHILD = """
from pwffsim.scenario import load_scenario
from pwffsim.sim.engine import Simulation
sc = load_scenario(None, overrides={overrides!r} + ["execution.executor='ray'", "execution.workers=2"])
Simulation(sc, out_dir={out!r}).run()
"""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _start_time(pid: int):
    """A live process's start time (None if it is gone or a zombie): with the pid, its identity."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _child(overrides: list, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD.format(overrides=overrides, out=str(out))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _watch(proc: subprocess.Popen, until, timeout_s: float = 180) -> dict[int, tuple[int, str]]:
    """Every descendant of ``proc`` seen (pid -> (start time, command line)) while polling, until
    ``until(seen)`` or the child ends."""
    seen: dict[int, tuple[int, str]] = {}
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        for pid, start in descendants(proc.pid).items():
            old = seen.get(pid, (start, ""))[1]
            seen[pid] = (start, _cmdline(pid) or old)  # (a worker renames itself as an actor)
        if until(seen):
            break
        time.sleep(0.1)
    return seen


def _gone(seen: dict[int, tuple[int, str]], timeout_s: float) -> list[str]:
    """The command lines of the processes of ``seen`` still alive after ``timeout_s`` (same pid and
    start time: a reused pid is another process)."""
    def left():
        return [cmd for pid, (start, cmd) in seen.items() if _start_time(pid) == start]

    deadline = time.time() + timeout_s
    while time.time() < deadline and left():
        time.sleep(0.1)
    return left()


def _csvs(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.csv"))}


def _kinds(seen: dict[int, str]) -> set[str]:
    names = ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::LearnerActor", "ray_reaper")
    return {n for n in names for _, cmd in seen.values() if n in cmd}


@linux
def test_own_local_ray_gives_the_in_process_traces_and_leaves_nothing(tmp_path):
    Simulation(load_scenario(None, overrides=TINY), out_dir=str(tmp_path / "inproc")).run()
    proc = _child(TINY, tmp_path / "ray")
    seen = _watch(proc, until=lambda seen: False)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    assert {"gcs_server", "raylet", "ray::LearnerActor", "ray_reaper"} <= _kinds(seen), seen
    assert _gone(seen, 10) == [], "Ray processes outlived the run"
    a, b = _csvs(tmp_path / "inproc"), _csvs(tmp_path / "ray")
    assert set(a) >= {"events.csv", "rounds.csv", "clients.csv", "final.csv"} and a == b


@linux
def test_kill_9_of_the_driver_leaves_no_ray_process(tmp_path):
    proc = _child(["fl.rounds=200", "devices.count=6", "fl.clients_per_round=4", "pwff.metric_prompts=0",
                   "pwff.align_steps=0", "fl.final_evaluation='none'"], tmp_path / "out")
    busy = [None]

    def actors_busy(seen):  # both actors up, then 2 s more: they have taken jobs
        if sum("ray::LearnerActor" in c for _, c in seen.values()) >= 2 and busy[0] is None:
            busy[0] = time.time()
        return busy[0] is not None and time.time() - busy[0] > 2

    seen = _watch(proc, actors_busy)
    assert proc.poll() is None, f"the run ended first: {proc.stderr.read()[-2000:]}"
    kinds = _kinds(seen)
    assert {"gcs_server", "raylet", "ray::LearnerActor", "ray_reaper"} <= kinds, seen
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    left = _gone(seen, 15)
    assert left == [], f"survived the driver: {left}"


def test_the_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    from pwffsim.cli import main
    from pwffsim.sim.ray_executor import RAY_MISSING, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(ValueError, match=r"^execution\.executor='ray' needs Ray: pip install 'pwffsim\[ray\]'$"):
        import_ray()
    sc = load_scenario(None, overrides=[*TINY, "execution.executor='ray'"])
    with pytest.raises(ValueError, match="pwffsim\\[ray\\]"):
        build_executor(sc, None)
    args = ["run", "--out", str(tmp_path / "o"), "--quiet", "--no-plot", "--set", "execution.executor='ray'",
            *[a for o in TINY for a in ("--set", o)]]
    assert main(args) == 2
    assert capsys.readouterr().err == f"pwffsim: error: {RAY_MISSING}\n"


def test_address_only_with_the_ray_executor():
    with pytest.raises(ScenarioError, match="execution.address"):
        load_scenario(None, overrides=["execution.address='auto'"])
    sc = load_scenario(None, overrides=["execution.executor='ray'", "execution.address='ray://head:10001'"])
    assert sc.execution.address == "ray://head:10001"


@pytest.mark.parametrize("scheme", ["pwff", "ditto", "fedrep", "local-only"])
def test_a_packed_job_is_the_job_with_its_global_part_put_once(scheme):
    """pack/unpack through a stand-in object store: the rebuilt job equals the job (keys in order), and
    a round's jobs put their global part (and the personal part's initial values) once."""
    import dataclasses

    from pwffsim.learn.contract import TrainJob
    from pwffsim.learn.train import Learner
    from pwffsim.sim.ray_transport import PartCache, SharedParts, pack, unpack

    store: dict[int, dict] = {}

    def put(value):
        store[len(store)] = value
        return len(store) - 1

    sc = load_scenario(None, overrides=[*TINY, f"pwff.scheme='{scheme}'"])
    jobs = _jobs(sc, Learner(*learner_specs(sc), torch_threads=1), [0, 1, 2, 3])
    shared, parts = SharedParts(put), PartCache(store.__getitem__)
    for job in jobs:
        back = unpack(pack(job, shared), parts, TrainJob)
        for f in dataclasses.fields(TrainJob):
            a, b = getattr(job, f.name), getattr(back, f.name)
            assert (list(a) == list(b) and all(a[k] is b[k] for k in a)) if isinstance(a, dict) else a == b, f.name
    has_global, has_reset = bool(jobs[0].prox_anchor or sc.pwff.global_groups), bool(jobs[0].personal_reset)
    assert shared.puts == parts.fetches == int(has_global) + int(has_reset)


@pytest.fixture(scope="module")
def ray_session():
    from pwffsim.sim.ray_executor import import_ray, init_ray

    ray = import_ray()
    init_ray(ray, 2, None)
    yield ray
    ray.shutdown()


def _jobs(sc, learner, clients):
    """The first round's jobs, as the simulation builds them (one global dict for all)."""
    init = learner.initial_state()
    split = ModelSplit.of(learner, init, sc.pwff.global_groups)
    state = RunState(global_state=split.global_part(init))
    make = TrainJobs(sc, state, split, client_preferences(sc))
    return [make(0, c, state.global_state) for c in clients]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def test_actors_run_jobs_and_calls_as_the_local_learner_and_cancel_and_close(ray_session):
    from pwffsim.learn.train import Learner
    from pwffsim.sim.ray_executor import RayExecutor

    sc = load_scenario(None, overrides=TINY)
    specs = learner_specs(sc)
    learner = Learner(*specs, torch_threads=1)
    jobs = _jobs(sc, learner, [0, 1, 2, 3, 4, 5])
    ex = RayExecutor(*specs, torch_threads=1, workers=2)
    handles = [ex.submit(j) for j in jobs[:4]]
    state = {**jobs[0].start_state}
    metrics = ex.call("evaluate_metrics", state, 1, 0.3, 0.7)
    dropped = [ex.submit(j) for j in jobs[4:]]
    assert all(h.cancel() for h in dropped)  # queued behind the others: never run
    with pytest.raises(RuntimeError, match="cancelled"):
        dropped[0].result()
    for job, h in zip(jobs, handles):
        got, want = vars(h.result()), vars(learner.run(job))
        assert got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want), job.client
    assert _same(metrics.result(), learner.evaluate_metrics(state, 1, 0.3, 0.7))
    assert handles[0].cancel() is False  # finished
    # The global part once for the six jobs (the proximal anchor is that same part), the personal
    # part's initial values once: two puts, not twelve.
    assert jobs[0].prox_anchor is not None and jobs[0].personal_reset
    assert ex._shared.puts == 2
    late = ex.submit(jobs[5])
    ex.close()  # waits for what runs, drops what is queued
    assert ex.stats["jobs"] == 5 and ex.stats["puts"] == 2
    assert ray_session.is_initialized(), "a Ray the executor did not start is left running"
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(jobs[0])
    with pytest.raises(RuntimeError, match="closed"):
        ex.call("num_samples", 0)
    del late


def test_abort_kills_the_actors_at_once(ray_session):
    from pwffsim.learn.train import Learner
    from pwffsim.sim.ray_executor import RayExecutor

    sc = load_scenario(None, overrides=TINY)
    specs = learner_specs(sc)
    ab = RayExecutor(*specs, torch_threads=1, workers=1)
    actor = ab._actors[0]
    assert ab.warm_up()
    ab.submit(_jobs(sc, Learner(*specs, torch_threads=1), [0])[0])
    t0 = time.perf_counter()
    ab.abort()  # the actor is killed with its job
    with pytest.raises(ray_session.exceptions.RayActorError):
        ray_session.get(actor.ready.remote(), timeout=30)
    assert time.perf_counter() - t0 < 20 and ray_session.is_initialized()
