"""PWFF against its alternatives on one scenario and several seeds (a benchmark, not a test).

For each aggregation scheme (``pwff``: adapters global and LoRA personal; ``fedavg-all``; ``lora-global``;
``local-only``; the personalized-FL baselines ``fedrep`` and ``ditto``) and each seed, runs the scenario
and reports

* upload bytes per round (what the aggregated clients sent),
* mean round delay (simulated s),
* total device energy (J),
* mean personalized objective of every client's final model (global part + its own personal part;
  under ``ditto`` its personal model) on its own stratified metric prompts (:mod:`pwffsim.learn.metrics`),
  beside the always-refuse floor and the untrained base on the same prompts,
* mean personalization gap on each device's own held-out rows (its global-only model's loss minus its
  final model's).

Every scheme sees the same channel, placement, data and preferences on a given seed (common random
numbers: each stream is seeded from the scenario seed alone).

    python benchmarks/pwff_vs_baselines.py [SCENARIO] [--seeds 0-2] [--set key=value ...] [--markdown]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

SCHEMES = ("pwff", "fedavg-all", "lora-global", "local-only", "fedrep", "ditto")


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def run_one(scenario_path, overrides, scheme, seed) -> dict:
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sc = load_scenario(scenario_path, overrides=[*overrides, f"pwff.scheme='{scheme}'"], seed=seed)
    sim = Simulation(sc)
    s = sim.run()
    rounds = sim.rounds
    delays = [r["t_end_s"] - r["t_start_s"] for r in rounds]
    return {
        "bytes_up_per_round": s["bytes_up"] / max(1, len(rounds)),
        "round_delay_s": float(np.mean(delays)),
        "energy_j": s["total_device_energy_j"],
        "objective": s["final_objective_mean"],
        "gap": s["final_personalization_gap_mean"],
        "eval_loss": s["final_eval_loss_mean"],
        "floor": s["reference_objective_always_refuse_mean"],
        "base": s["reference_objective_base_mean"],
    }


def fmt(xs, spec):
    xs = np.asarray(xs, dtype=float)
    if len(xs) == 1:
        return format(xs[0], spec)
    return f"{format(xs.mean(), spec)} ± {format(xs.std(ddof=1), spec)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default=None)
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    rows = {}
    t0 = time.perf_counter()
    for scheme in args.schemes.split(","):
        rows[scheme] = [run_one(args.scenario, args.set, scheme, seed) for seed in seeds]
    print(f"scenario: {args.scenario or 'built-in default'} {' '.join(args.set)}; seeds {seeds}; "
          f"mean ± sd over seeds; wall time {time.perf_counter() - t0:.0f} s\n")
    first = next(iter(rows.values()))
    print(f"always-refuse objective {fmt([r['floor'] for r in first], '.3f')}, untrained base "
          f"{fmt([r['base'] for r in first], '.3f')} (the same for every scheme)\n")
    print("| scheme | upload bytes / round | mean round delay (s) | device energy (J) | final objective | "
          "final eval loss (own) | personalization gap |")
    print("|---|---|---|---|---|---|---|")
    for scheme, rs in rows.items():
        col = lambda k: [r[k] for r in rs]  # noqa: E731
        print(f"| {scheme} | {fmt(col('bytes_up_per_round'), '.0f')} | {fmt(col('round_delay_s'), '.4f')} | "
              f"{fmt(col('energy_j'), '.3f')} | {fmt(col('objective'), '.3f')} | {fmt(col('eval_loss'), '.3f')} | "
              f"{fmt(col('gap'), '.3f')} |")


if __name__ == "__main__":
    main()
