"""Cost of a run against the population and against the work (issue 10; a benchmark, not a test).

Runs the built-in default scenario with metrics off (``fl.eval_batches=0``, ``pwff.metric_prompts=0``,
``fl.final_evaluation='trained'``) for a fixed amount of work, ``--rounds`` rounds of ``--clients``
clients (default 3 x 10), at ``devices.count`` = 20, 10^2, ..., 10^5, then at a fixed population with
10, 20, 40, ... clients per round, and prints for each run the wall time (build + run, the minimum of
``--repeats``), the peak traced Python memory (``tracemalloc``, a separate run) and the fitted cost
exponents (least-squares slope of log cost against log devices / log clients).  Acceptance (issue 10):

* wall(100 000 devices) / wall(20 devices) <= 1.5;
* memory per never-selected device = (peak(10^5) - peak(10^4)) / 90 000 <= 2 kB.

``--learner stub`` (default) uses the tests' StubLearner (``tests/conftest.py``; scheme 'fedavg-all' so
it transfers its payload), isolating the network and the orchestrator; ``--learner real`` builds the
scenario's learner (lazy per device once the learning side is).

    python benchmarks/scale.py [--learner stub|real] [--max-devices 100000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METRICS_OFF = ["fl.eval_batches=0", "pwff.metric_prompts=0", "fl.final_evaluation='trained'"]


def scenario(devices: int, clients: int, rounds: int, learner: str, extra: list[str]):
    from pwffsim.scenario import load_scenario

    sets = [f"devices.count={devices}", f"fl.clients_per_round={clients}", f"fl.rounds={rounds}", *METRICS_OFF]
    if learner == "stub":
        sets.append("pwff.scheme='fedavg-all'")
    return load_scenario(None, sets + extra, seed=0)


def make_learner(kind: str):
    if kind != "stub":
        return None
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import StubLearner

    return StubLearner(payload_bytes=40_000, flops=1e9)


def one_run(sc, learner_kind: str) -> tuple[float, float, float]:
    """(build s, run s, total s) of one run."""
    from pwffsim.sim.engine import Simulation

    gc.collect()
    t0 = time.perf_counter()
    sim = Simulation(sc, learner=make_learner(learner_kind))
    t1 = time.perf_counter()
    sim.run()
    t2 = time.perf_counter()
    del sim
    return t1 - t0, t2 - t1, t2 - t0


def peak_memory(sc, learner_kind: str) -> float:
    """Peak traced Python memory (bytes) of building and running once."""
    from pwffsim.sim.engine import Simulation

    gc.collect()
    tracemalloc.start()
    sim = Simulation(sc, learner=make_learner(learner_kind))
    sim.run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del sim
    return float(peak)


def measure(devices: int, clients: int, args) -> dict:
    sc = scenario(devices, clients, args.rounds, args.learner, args.set)
    runs = [one_run(sc, args.learner) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r[2])
    return {"devices": devices, "clients": clients, "build_s": best[0], "run_s": best[1], "wall_s": best[2],
            "peak_b": peak_memory(sc, args.learner)}


def slope(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'devices':>8} {'clients':>7} {'build s':>8} {'run s':>8} {'wall s':>8} {'peak MB':>8}")
    for r in rows:
        print(f"{r['devices']:>8} {r['clients']:>7} {r['build_s']:>8.3f} {r['run_s']:>8.3f} {r['wall_s']:>8.3f} "
              f"{r['peak_b'] / 1e6:>8.2f}")


def report(by_devices: list[dict], by_clients: list[dict]) -> None:
    table(by_devices, f"Against device count ({by_devices[0]['clients']} clients per round)")
    table(by_clients, f"Against clients per round ({by_clients[0]['devices']} devices)")
    small = by_devices[0]
    big = by_devices[-1]
    print(f"\nwall({big['devices']}) / wall({small['devices']}) = {big['wall_s'] / small['wall_s']:.2f}  "
          "(target <= 1.5)")
    if len(by_devices) >= 3:
        prev = by_devices[-2]
        per = (big["peak_b"] - prev["peak_b"]) / (big["devices"] - prev["devices"])
        print(f"memory per never-selected device = (peak({big['devices']}) - peak({prev['devices']})) / "
              f"{big['devices'] - prev['devices']} = {per:.0f} B  (target <= 2048)")
    fit = [r for r in by_devices if r["devices"] >= 100]
    if len(fit) >= 2:
        print(f"cost exponent vs devices (>= 100): wall {slope([r['devices'] for r in fit], [r['wall_s'] for r in fit]):.3f}"
              f", peak memory {slope([r['devices'] for r in fit], [r['peak_b'] for r in fit]):.3f}")
    if len(by_clients) >= 2:
        xs = [r["clients"] for r in by_clients]
        print(f"cost exponent vs clients per round: wall {slope(xs, [r['wall_s'] for r in by_clients]):.3f}, "
              f"peak memory {slope(xs, [r['peak_b'] for r in by_clients]):.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learner", choices=["stub", "real"], default="stub")
    ap.add_argument("--max-devices", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-clients", type=int, default=160, help="largest clients per round of the second sweep")
    ap.add_argument("--clients-population", type=int, default=10_000, help="devices in the clients sweep")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra scenario override key=value")
    args = ap.parse_args(argv)
    counts = [20] + [10 ** e for e in range(2, 1 + int(math.log10(args.max_devices)))]
    measure(20, args.clients, args)  # warm-up: imports, first-call costs
    by_devices = []
    for n in counts:
        by_devices.append(measure(n, args.clients, args))
        print(f"  devices={n}: {by_devices[-1]['wall_s']:.3f} s", file=sys.stderr, flush=True)
    by_clients = []
    k = args.clients
    while k <= args.max_clients:
        by_clients.append(measure(args.clients_population, k, args))
        print(f"  clients={k}: {by_clients[-1]['wall_s']:.3f} s", file=sys.stderr, flush=True)
        k *= 2
    print(f"learner: {args.learner}; {args.rounds} rounds; metrics off ({', '.join(METRICS_OFF)})")
    report(by_devices, by_clients)


if __name__ == "__main__":
    main()
