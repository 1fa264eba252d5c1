"""Network-only event rate against raw SimPy's, measured side by side in one run (issue 10; a benchmark).

* raw SimPy: ``--clients`` processes, each waiting on exponential timeouts forever; events per second
  of wall time over ``--raw-events`` events (the cheapest a SimPy model can be);
* pwffsim, network only (``learning.mode = "none"``, charged for ``--cost-model``): ``--devices``
  devices, ``--clients`` clients per round, ``--rounds`` rounds, Rayleigh fading; SimPy events
  processed (``Environment.step`` calls) per second of wall time of ``run()``.

Prints both rates and their ratio (issue 10's target: >= 0.3 at 10 000 devices, 100 clients per round,
100 rounds; the default here is 5 rounds so that it finishes in a minute or two).

    python benchmarks/event_rate.py [--devices 10000] [--clients 100] [--rounds 5] [--links on|off]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import simpy


def raw_simpy_rate(processes: int, events: int, seed: int = 0) -> float:
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    waits = iter(rng.exponential(1.0, size=events + processes))

    def proc():
        while True:
            yield env.timeout(next(waits))

    for _ in range(processes):
        env.process(proc())
    steps = 0
    t0 = time.perf_counter()
    while steps < events:
        env.step()
        steps += 1
    return steps / (time.perf_counter() - t0)


def pwffsim_rate(devices: int, clients: int, rounds: int, cost_model: str, links: bool) -> tuple[float, int]:
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sc = load_scenario(None, overrides=[f"devices.count={devices}", f"fl.clients_per_round={clients}",
                                        f"fl.rounds={rounds}", "channel.fading='rayleigh'", "learning.mode='none'",
                                        f"model.cost_model='{cost_model}'", "fl.final_evaluation='none'",
                                        f"trace.links={'true' if links else 'false'}"])
    sim = Simulation(sc)
    steps = 0
    step = sim.env.step

    def counted_step():
        nonlocal steps
        steps += 1
        step()

    sim.env.step = counted_step  # Environment.run calls self.step()
    t0 = time.perf_counter()
    sim.run()
    return steps / (time.perf_counter() - t0), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cost-model", default="qwen2.5-0.5b")
    ap.add_argument("--links", choices=["on", "off"], default="on", help="write the links trace (default on)")
    ap.add_argument("--raw-events", type=int, default=1_000_000)
    args = ap.parse_args()
    sim_rate, steps = pwffsim_rate(args.devices, args.clients, args.rounds, args.cost_model, args.links == "on")
    raw = raw_simpy_rate(args.clients, args.raw_events)
    print(f"raw SimPy ({args.clients} processes of timeouts): {raw:12,.0f} events/s")
    print(f"pwffsim network-only ({args.devices} devices, {args.clients} clients x {args.rounds} rounds, Rayleigh, "
          f"links trace {args.links}): {sim_rate:12,.0f} events/s over {steps:,} events")
    print(f"ratio {sim_rate / raw:.3f}  (target >= 0.3)")


if __name__ == "__main__":
    main()
