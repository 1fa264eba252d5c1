"""Parallel executors against in-process training (a benchmark, not a test).

Runs one scenario through the whole simulator with each executor (``inprocess``, ``process`` with
``--workers`` workers, and ``ray`` when this pwffsim and machine have it), interleaved ``--repeats``
times, each run in a fresh process (so every engine pays its own start-up: imports, model build,
spawning workers), and prints per executor

* the whole run's wall time (process start to end), min over repeats;
* the steady round: the mean wall time between rounds rows after the first ``--warmup`` rounds
  (the run's ``on_round`` callback), min over repeats;
* the speed-up of each against in-process, on both.

Two workloads (``--workload``):

* ``training``: a training-dominated run, the built-in default scenario with 10 clients per round
  over ``--rounds`` rounds (default 30: over a minute of training in-process here);
* ``table``: issue 12's table workload, 20 rounds x 5 clients of the default scenario with alignment
  and the proximal term off (``--metrics`` keeps the held-out metrics on; off by default, as there).

Note the bound of the ``table`` workload: 5 equal local updates on 2 workers take 3 update times per
round, so a pool's steady round gains at most 5/3 = 1.67x there (measurement apart).

    python benchmarks/parallel.py [--workload training|table] [--rounds N] [--repeats R] [--set k=v ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

WORKLOADS = {
    "training": ["fl.clients_per_round=10"],
    "table": ["fl.clients_per_round=5", "pwff.align_steps=0", "pwff.prox_mu=0"],
}
METRICS_OFF = ["fl.eval_batches=0", "pwff.metric_prompts=0"]


def child(overrides: list[str]) -> None:
    """One run in this process; prints a JSON line with the round timestamps (s since start)."""
    t0 = time.perf_counter()
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    stamps: list[float] = []
    sc = load_scenario(None, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulation(sc, out_dir=tmp, on_round=lambda row: stamps.append(time.perf_counter() - t0))
        sim.run()
    wall = time.perf_counter() - t0
    updates = sum(1 for c in sim.clients if c["train_loss"] == c["train_loss"])
    print(json.dumps({"wall_s": wall, "stamps": stamps, "updates": updates}))


def run_child(overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", *overrides], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(overrides)}):\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0  # process start to end, interpreter start-up included
    return res


def steady_round_s(stamps: list[float], warmup: int) -> float:
    s = stamps[warmup:]
    return (s[-1] - s[0]) / (len(s) - 1) if len(s) > 1 else float("nan")


def executors(workers: int, with_ray: bool) -> dict[str, list[str]]:
    out = {"inprocess": ["execution.executor='inprocess'"],
           f"process x{workers}": ["execution.executor='process'", f"execution.workers={workers}"]}
    if with_ray:
        out[f"ray x{workers}"] = ["execution.executor='ray'", f"execution.workers={workers}"]
    return out


def ray_supported() -> bool:
    try:
        import ray  # noqa: F401
        from pwffsim.scenario import load_scenario

        load_scenario(None, overrides=["execution.executor='ray'"])
        return True
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="training")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="rounds left out of the steady round")
    ap.add_argument("--metrics", action="store_true", help="table workload: keep the held-out metrics on")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    rounds = args.rounds or (30 if args.workload == "training" else 20)
    base = [f"fl.rounds={rounds}", *WORKLOADS[args.workload]]
    if args.workload == "table" and not args.metrics:
        base += METRICS_OFF
    engines = executors(args.workers, not args.no_ray and ray_supported())
    walls: dict[str, list[float]] = {e: [] for e in engines}
    steady: dict[str, list[float]] = {e: [] for e in engines}
    updates = 0
    for _ in range(args.repeats):  # interleaved: machine load hits every engine alike
        for name, extra in engines.items():
            res = run_child(base + extra + args.set)
            walls[name].append(res["wall_s"])
            steady[name].append(steady_round_s(res["stamps"], args.warmup))
            updates = res["updates"]
    report(args, base, engines, walls, steady, updates)


def report(args, base, engines, walls, steady, updates) -> None:
    w0, s0 = min(walls["inprocess"]), min(steady["inprocess"])
    print(f"workload {args.workload}: {' '.join(base + args.set)}; {updates} local updates; "
          f"min of {args.repeats} interleaved runs, each in a fresh process")
    print("| executor | whole run | speed-up | steady round | speed-up |")
    print("|---|---|---|---|---|")
    for name in engines:
        w, s = min(walls[name]), min(steady[name])
        print(f"| {name} | {w:.2f} s | {w0 / w:.2f}x | {s:.3f} s | {s0 / s:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
