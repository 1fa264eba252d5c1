"""PWFF's central claim put to a fair test (issue 11; a benchmark, not a test).

The claim: keeping part of the model personal serves each device better than federating everything.
This runs every aggregation scheme and personalized-FL baseline (``--schemes``) against the task's
preference divergence (``data.preference_divergence``: 0 = every device wants the same answers, 1 =
two opposed camps; ``--divergence``, at least 4 levels) and the local data size
(``data.train_samples_per_client``, ``--samples``, 2 levels), ``--seeds`` seeds each. A seed fixes the
channels, placement, data and preferences for every scheme (common random numbers), so schemes are
compared seed by seed: the gap ``objective(pwff) - objective(fedavg-all)`` is a paired difference, and
its 95% confidence interval is Student's t over the seeds.

Each run writes its traces under ``OUT/runs/<divergence>/<samples>/<scheme>/seed<k>/`` and the
analysis reads only those traces (``summary.json``), so an interrupted benchmark resumes where it
stopped (a run whose ``summary.json`` exists is not run again). Outputs: ``OUT/claim.csv`` (one row per
run), ``OUT/claim.md`` (means with 95% CIs per scheme, divergence and size; the paired gaps) and
``OUT/claim_gap.png`` (the gap against divergence, one line per data size, 95% CI bars; bytes and
energy per scheme beside it).

    python benchmarks/pwff_claim.py [--out bench_out/pwff_claim] [--jobs 2] [--quick]

The full grid (4 divergences x 2 sizes x 6 schemes x 5 seeds = 240 runs) takes about an hour on this
2-core machine; ``--quick`` (2 divergences, 1 size, 2 schemes, 2 seeds, 2 rounds) is what CI runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SCHEMES = ("pwff", "fedavg-all", "lora-global", "local-only", "ditto", "fedrep")
# (column in claim.csv, key in summary.json)
FIELDS = (
    ("objective", "final_objective_mean"),
    ("objective_always_refuse", "reference_objective_always_refuse_mean"),
    ("objective_base", "reference_objective_base_mean"),
    ("reward_help", "final_reward_help_mean"),
    ("reward_help_borderline", "final_reward_help_borderline_mean"),
    ("reward_safe", "final_reward_safe_mean"),
    ("gap_loss", "final_personalization_gap_mean"),
    ("eval_loss", "final_eval_loss_mean"),
    ("bytes_up", "bytes_up"),
    ("energy_j", "total_device_energy_j"),
    ("simulated_time_s", "simulated_time_s"),
)
#: The benchmark's scenario (on top of the defaults): a small population that every device of which
#: trains several times, supervised local updates only (alignment triples the cost of a run).
BASE = ["devices.count=8", "fl.clients_per_round=4", "fl.rounds=12", "fl.local_steps=10",
        "pwff.align_steps=0", "trace.links=false"]
QUICK = dict(divergence=[0.0, 1.0], samples=[16], schemes=["pwff", "fedavg-all"], seeds=[0, 1],
             sets=["fl.rounds=2", "fl.clients_per_round=3", "devices.count=6", "fl.local_steps=2",
                   "pwff.align_steps=0", "pwff.metric_prompts=4", "trace.links=false"])


def run_dir(out: Path, divergence: float, samples: int, scheme: str, seed: int) -> Path:
    return out / "runs" / f"div{divergence:g}" / f"n{samples}" / scheme / f"seed{seed}"


def run_one(job: tuple) -> str:
    """Run one configuration into its folder (skipped if its summary exists); returns the folder."""
    d, divergence, samples, scheme, seed, sets = job
    d = Path(d)
    if (d / "summary.json").exists():
        return str(d)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sc = load_scenario(None, overrides=[*sets, f"data.preference_divergence={divergence}",
                                        f"data.train_samples_per_client={samples}",
                                        f"pwff.scheme='{scheme}'"], seed=seed)
    tmp = d.with_name(d.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted run left
    tmp.parent.mkdir(parents=True, exist_ok=True)
    Simulation(sc, out_dir=str(tmp)).run()
    tmp.rename(d)  # a folder with summary.json is a finished run
    return str(d)


def read_rows(out: Path, jobs: list[tuple]) -> list[dict]:
    rows = []
    for d, divergence, samples, scheme, seed, _ in jobs:
        s = json.loads((Path(d) / "summary.json").read_text())
        row = {"divergence": divergence, "samples": samples, "scheme": scheme, "seed": seed}
        for col, key in FIELDS:
            v = s.get(key)
            row[col] = float(v) if v is not None else math.nan
        rows.append(row)
    return rows


def mean_ci(xs) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval (nan for one value)."""
    from scipy import stats

    xs = np.asarray([x for x in xs if math.isfinite(x)], dtype=float)
    if len(xs) == 0:
        return math.nan, math.nan
    if len(xs) == 1:
        return float(xs[0]), math.nan
    half = stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs))
    return float(xs.mean()), float(half)


def paired_gaps(rows: list[dict], a: str, b: str) -> dict[tuple[float, int], tuple[float, float]]:
    """(divergence, samples) -> mean and 95% CI of objective(a) - objective(b), paired by seed."""
    by = {(r["divergence"], r["samples"], r["scheme"], r["seed"]): r["objective"] for r in rows}
    out = {}
    for dv, n in sorted({(r["divergence"], r["samples"]) for r in rows}):
        seeds = sorted({r["seed"] for r in rows if (r["divergence"], r["samples"]) == (dv, n)})
        diffs = [by[(dv, n, a, s)] - by[(dv, n, b, s)] for s in seeds
                 if (dv, n, a, s) in by and (dv, n, b, s) in by]
        if diffs:
            out[(dv, n)] = mean_ci(diffs)
    return out


def fmt(m: float, h: float, spec: str = ".3f") -> str:
    if not math.isfinite(m):
        return "n/a"
    return format(m, spec) if not math.isfinite(h) else f"{format(m, spec)} ± {format(h, spec)}"


def markdown(rows: list[dict], schemes: list[str]) -> str:
    lines = ["| divergence | samples/device | scheme | objective (95% CI) | bytes up | device energy (J) |",
             "|---|---|---|---|---|---|"]
    cells = sorted({(r["divergence"], r["samples"]) for r in rows})
    for dv, n in cells:
        for sc in schemes:
            rs = [r for r in rows if (r["divergence"], r["samples"], r["scheme"]) == (dv, n, sc)]
            if rs:
                lines.append(f"| {dv:g} | {n} | {sc} | {fmt(*mean_ci([r['objective'] for r in rs]))} | "
                             f"{fmt(*mean_ci([r['bytes_up'] for r in rs]), '.0f')} | "
                             f"{fmt(*mean_ci([r['energy_j'] for r in rs]), '.2f')} |")
    for ref, col in (("always refuse", "objective_always_refuse"), ("untrained base", "objective_base")):
        for dv, n in cells:
            rs = [r for r in rows if (r["divergence"], r["samples"]) == (dv, n) and r["scheme"] == schemes[0]]
            lines.append(f"| {dv:g} | {n} | *{ref}* | {fmt(*mean_ci([r[col] for r in rs]))} | | |")
    if "fedavg-all" in schemes:
        lines += ["", "Paired by seed: objective(scheme) - objective(fedavg-all), mean and 95% CI "
                  "(better / worse: the CI excludes 0).", "",
                  "| divergence | samples/device | " + " | ".join(s for s in schemes if s != "fedavg-all") + " |",
                  "|---|---|" + "---|" * (len(schemes) - 1)]
        gaps = {s: paired_gaps(rows, s, "fedavg-all") for s in schemes if s != "fedavg-all"}
        for dv, n in cells:
            lines.append(f"| {dv:g} | {n} | " + " | ".join(_verdict(*g[(dv, n)]) if (dv, n) in g else "n/a"
                                                           for g in gaps.values()) + " |")
    return "\n".join(lines) + "\n"


def _verdict(m: float, h: float) -> str:
    word = ("better" if m - h > 0 else "worse" if m + h < 0 else "n.s.") if math.isfinite(h) else "n/a"
    return f"{fmt(m, h)} ({word})"


def plot(rows: list[dict], schemes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for n in sorted({r["samples"] for r in rows}):
        gaps = {dv: g for (dv, nn), g in paired_gaps(rows, "pwff", "fedavg-all").items() if nn == n}
        xs = sorted(gaps)
        ax.errorbar(xs, [gaps[x][0] for x in xs], yerr=[np.nan_to_num(gaps[x][1]) for x in xs],
                    marker="o", capsize=4, label=f"{n} samples/device")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("preference divergence")
    ax.set_ylabel("objective(pwff) - objective(fedavg-all)")
    ax.set_title("Personalized objective gap (95% CI over seeds)")
    ax.legend()
    kb = [np.nanmean([r["bytes_up"] for r in rows if r["scheme"] == s]) / 1e3 for s in schemes]
    ej = [np.nanmean([r["energy_j"] for r in rows if r["scheme"] == s]) for s in schemes]
    x = np.arange(len(schemes))
    bx.bar(x - 0.2, kb, 0.4, label="upload kB per run")
    bx2 = bx.twinx()
    bx2.bar(x + 0.2, ej, 0.4, color="tab:orange", label="device energy J")
    bx.set_xticks(x, schemes, rotation=30)
    bx.set_ylabel("upload kB per run")
    bx2.set_ylabel("device energy (J)")
    bx.set_title("Cost per run (mean over the grid)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grid(args) -> tuple[list[tuple], list[str]]:
    if args.quick:
        div, sizes, schemes, seeds, sets = (QUICK["divergence"], QUICK["samples"], QUICK["schemes"],
                                            QUICK["seeds"], QUICK["sets"] + args.set)
    else:
        div = [float(x) for x in args.divergence.split(",")]
        sizes = [int(x) for x in args.samples.split(",")]
        schemes = args.schemes.split(",")
        seeds = list(range(args.seeds))
        sets = BASE + args.set
    jobs = [(str(run_dir(args.out, dv, n, sc, s)), dv, n, sc, s, sets)
            for dv in div for n in sizes for s in seeds for sc in schemes]
    return jobs, schemes


class _Serial:
    """``--jobs 1``: the runs one after the other in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    map = staticmethod(map)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/pwff_claim"))
    ap.add_argument("--divergence", default="0,0.33,0.67,1")
    ap.add_argument("--samples", default="16,64", help="training samples per device (2 levels)")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    ap.add_argument("--set", action="append", default=[], help="extra scenario override key=value")
    ap.add_argument("--quick", action="store_true", help="the CI size")
    args = ap.parse_args(argv)
    jobs, schemes = grid(args)
    t0 = time.perf_counter()
    todo = [j for j in jobs if not (Path(j[0]) / "summary.json").exists()]
    print(f"{len(jobs)} runs ({len(jobs) - len(todo)} already done) into {args.out}", flush=True)
    pool = ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    with pool if pool is not None else _Serial() as runner:
        for k, d in enumerate(runner.map(run_one, todo), 1):
            print(f"  [{k}/{len(todo)}] {d}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = read_rows(args.out, jobs)
    with (args.out / "claim.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(rows, schemes)
    (args.out / "claim.md").write_text(md)
    plot(rows, schemes, args.out / "claim_gap.png")
    print(md)
    print(f"wrote {args.out}/claim.csv, claim.md, claim_gap.png; wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
