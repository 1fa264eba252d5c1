"""Whole-run wall time of the Ray executor against in-process training (a benchmark, not a test).

Runs one training-dominated scenario (default: the built-in default scenario with ``fl.rounds=20``,
``fl.clients_per_round=10``, 200 local updates) with ``execution.executor = "inprocess"`` and with
``"ray"`` (``--workers`` local actors), each in a fresh Python process (imports, model building, Ray's
start, the run and its final evaluation all counted), interleaved ``--repeats`` times, and prints the
minimum of each, their ratio (target: ray >= 1.6x in-process with 2 workers) and where the Ray run's
time went:

* ``construct``: ``Simulation(...)``: the main's learner, then ``ray.init`` (``ray init``) and the actors'
  creation (they build their learners in the background);
* ``run``: the round loop and the final evaluation; ``main waits`` is the time the main spent blocked on
  results (``first wait`` of it on the first one: the actors' start-up), ``actor busy`` the time the
  actors spent in ``Learner.run``, ``final eval`` the main's final evaluation;
* ``shared puts``: global parts put in Ray's object store (once per round version);
* ``rounds alone``: the run less the final evaluation (Ray: less the first wait too), side by side.

``--ray-first`` adds a third run that builds the Ray executor before the simulation (and its main
learner), passed as ``Simulation(executor=...)``: what starting Ray first would save.

The traces of the two runs are compared (their CSV files, byte for byte).

    python benchmarks/ray_speedup.py [--rounds 20] [--clients 10] [--workers 2] [--repeats 1] [--ray-first]
                                     [--set k=v ...]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(executor: str, out_dir: str, overrides: list[str]) -> dict:
    """One whole run in this (fresh) process; its timings."""
    t0 = time.perf_counter()
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    early = executor == "ray-first"
    sc = load_scenario(None, overrides=[*overrides, f"execution.executor='{'ray' if early else executor}'"])
    t1 = time.perf_counter()
    if early:  # the executor (Ray and its actors) first, so its start overlaps the main's learner
        from pwffsim.sim.builders import build_executor

        ex = build_executor(sc, None)
    sim = Simulation(sc, out_dir=out_dir, executor=ex) if early else Simulation(sc, out_dir=out_dir)
    t2 = time.perf_counter()
    final = [0.0]
    evaluate = sim._final_evaluation

    def timed_final() -> None:
        t = time.perf_counter()
        evaluate()
        final[0] = time.perf_counter() - t

    sim._final_evaluation = timed_final
    stats = getattr(sim.executor, "stats", None)
    first = _time_first_wait(sim.executor) if stats is not None else None
    sim.run()
    if early:
        sim.executor.close()
    t3 = time.perf_counter()
    return {"imports_s": t1 - t0, "construct_s": t2 - t1, "run_s": t3 - t2, "total_s": t3 - t0,
            "final_eval_s": final[0], "first_wait_s": first[0] if first else None, "stats": stats}


def _time_first_wait(executor) -> list:
    """Record how long the main waits for its first result (the actors' start-up shows there)."""
    first: list = []
    fetch = executor._fetch

    def timed(ref):
        t = time.perf_counter()
        value = fetch(ref)
        if not first:
            first.append(time.perf_counter() - t)
        return value

    executor._fetch = timed
    return first


def run_child(executor: str, out_dir: str, overrides: list[str]) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); from ray_speedup import child; "
            "print('@@' + json.dumps(child(%r, %r, %r)))" % (str(Path(__file__).parent), executor, out_dir, overrides))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{executor} run failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(line[2:]), "process_wall_s": wall}


def same_traces(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.csv"))
    return bool(names) and names == sorted(p.name for p in b.glob("*.csv")) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=10, help="fl.clients_per_round")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ray-first", action="store_true",
                    help="also time Ray with its executor built before the main's learner (Simulation(executor=...))")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    overrides = [f"fl.rounds={args.rounds}", f"fl.clients_per_round={args.clients}",
                 f"execution.workers={args.workers}", *args.set]
    runs: dict[str, list[dict]] = {"inprocess": [], "ray": [], **({"ray-first": []} if args.ray_first else {})}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):  # interleaved: machine load hits both alike
            for ex in runs:
                runs[ex].append(run_child(ex, str(Path(tmp) / f"{ex}{rep}"), overrides))
                print(f"  [{rep + 1}/{args.repeats}] {ex}: {runs[ex][-1]['process_wall_s']:.2f} s", file=sys.stderr)
        identical = all(same_traces(Path(tmp) / "inprocess0", Path(tmp) / f"{ex}0") for ex in runs if ex != "inprocess")
    best = {ex: min(rs, key=lambda r: r["process_wall_s"]) for ex, rs in runs.items()}
    t_in, t_ray = best["inprocess"]["process_wall_s"], best["ray"]["process_wall_s"]
    print(f"scenario: built-in default, {' '.join(overrides)}")
    print(f"in-process          : {t_in:7.2f} s")
    print(f"ray, {args.workers} workers     : {t_ray:7.2f} s   speed-up {t_in / t_ray:.2f}x (target >= 1.6x)")
    if args.ray_first:
        t_first = best["ray-first"]["process_wall_s"]
        print(f"ray, executor first : {t_first:7.2f} s   speed-up {t_in / t_first:.2f}x")
    print(f"traces byte-identical: {identical}   (min of {args.repeats} interleaved repeats each)")
    # The rounds alone: the run less the final evaluation (and, for Ray, less the wait for the actors'
    # start-up, which shows as the first wait).
    steady_in = best["inprocess"]["run_s"] - best["inprocess"]["final_eval_s"]
    steady_ray = best["ray"]["run_s"] - best["ray"]["final_eval_s"] - best["ray"]["first_wait_s"]
    print(f"rounds alone        : in-process {steady_in:.2f} s, ray {steady_ray:.2f} s   "
          f"speed-up {steady_in / steady_ray:.2f}x")
    for ex, r in best.items():
        s = r["stats"] or {}
        print(f"  {ex:10s} imports {r['imports_s']:.2f}  construct {r['construct_s']:.2f}"
              + (f" (ray init {s['init_s']:.2f})" if s else "")
              + f"  run {r['run_s']:.2f} (final eval {r['final_eval_s']:.2f})"
              + (f"  main waits {s['wait_s']:.2f} (first wait {r['first_wait_s']:.2f})  actor busy "
                 f"{s['worker_s']:.2f} over {s['jobs']} jobs  shared puts {s.get('puts', '?')}" if s else "")
              + f"  process {r['process_wall_s']:.2f}")


if __name__ == "__main__":
    main()
