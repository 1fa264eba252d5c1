"""The default scenario charged for each shipped cost model, next to the trained toy (README table).

Every run trains the same tiny GPT-2 (seed 0); only what the devices are charged for changes
(``model.cost_model``): the upload's bytes (the scheme's global part in ``model.update_dtype``), the
compute time and energy of a local update (its analytic FLOPs), and so the rounds' delays::

    python benchmarks/cost_models.py                  # the default scenario, fp32 updates
    python benchmarks/cost_models.py --battery-j 1e7  # every profile's battery large enough
    python benchmarks/cost_models.py --set model.update_dtype='bf16' --set fl.rounds=3

Columns: parameters of the global part, bytes of one upload, FLOPs of one local update, mean round
delay (round end - round start), device energy per round (every device's energy over the run / rounds)
and the rounds completed and dropouts (a battery emptied).
"""
from __future__ import annotations

import argparse
import time

from pwffsim.learn.costconfig import SHIPPED


def run(cost_model: str | None, overrides: list[str]) -> dict:
    """One run of the default scenario charged for ``cost_model`` (None: the trained model)."""
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sets = list(overrides) + ([f"model.cost_model='{cost_model}'"] if cost_model else [])
    sc = load_scenario(None, overrides=sets, seed=0)
    t0 = time.perf_counter()
    sim = Simulation(sc)
    summary = sim.run()
    rounds = sim.rounds
    groups = sc.pwff.global_groups
    charged = sim.learner.charged
    return dict(
        model=f"{summary['charged_model']}" + (" (trained toy)" if cost_model is None else ""),
        global_params=sum(charged.group_params[g] for g in groups),
        upload_bytes=summary["payload_bytes_per_transfer"],
        flops=summary["training_flops_per_update"],
        round_delay_s=sum(r["t_end_s"] - r["t_start_s"] for r in rounds) / max(len(rounds), 1),
        energy_per_round_j=summary["total_device_energy_j"] / max(len(rounds), 1),
        rounds=len(rounds), dropped=summary["dropped"], wall_s=time.perf_counter() - t0)


def markdown(rows: list[dict]) -> str:
    head = ("| charged model | global params | upload bytes | FLOPs / update | round delay (s) "
            "| device energy / round (J) | rounds | dropped |\n|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['model']} | {r['global_params']:,} | {r['upload_bytes']:,} | {r['flops']:.3g} "
        f"| {r['round_delay_s']:.4g} | {r['energy_per_round_j']:.4g} | {r['rounds']} "
        f"| {r['dropped']} |\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="scenario override for every run, e.g. model.update_dtype='bf16'")
    ap.add_argument("--only", action="append", default=[], help="cost model name (repeatable)")
    ap.add_argument("--battery-j", type=float, default=None,
                    help="set every device profile's battery_j (J), e.g. 1e7: no device empties")
    args = ap.parse_args()
    names = [None] + [n for n in SHIPPED if not args.only or n in args.only]
    sets = list(args.set)
    if args.battery_j is not None:
        from pwffsim.scenario import load_scenario

        profiles = load_scenario(None, overrides=sets).devices.profiles
        sets += [f"devices.profiles.{i}.battery_j={args.battery_j}" for i in range(len(profiles))]
    rows = []
    for name in names:
        rows.append(run(name, sets))
        print(f"  {rows[-1]['model']}: {rows[-1]['wall_s']:.1f} s wall", flush=True)
    print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
