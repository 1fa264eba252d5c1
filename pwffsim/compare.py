"""``pwffsim compare``: aggregation policies on the same seeds, with common random numbers.

Every policy runs on every seed.  All random streams (placement, shadowing, fading per link and
block, mobility, availability, data, preferences) are seeded from the scenario seed alone, never from
the policy, so on one seed every policy sees the same channel, mobility and availability
realisations; only what the policy decides differs.

A policy is given as ``NAME[:P1[,P2]][@SELECTOR]``:

* ``NAME`` is a registered policy (:mod:`pwffsim.sim.policies.registry`); the values ``P1, P2`` go, in
  order, to the ``[fl]`` parameters its class lists: ``sync``; ``deadline:0.5`` (deadline_s);
  ``overselect:0.3,2.0`` (overcommit, deadline_s); ``fedavgm:0.9,1.0`` (server_momentum, server_lr);
  ``hierarchical:2`` (cloud_every); ``fedasync:0.6`` (async_alpha); ``fedbuff:3`` (buffer_size);
  ``semisync:0.3`` (period_s);
* ``@uniform`` (default), ``@channel``, ``@battery``, ``@oort`` choose the client selection.

Per run it keeps the traces (``OUT/<policy>/seed<N>/``); across seeds it writes ``compare.csv`` (one row
per policy and seed), ``summary.csv`` and ``summary.md`` (mean and 95% CI, Student t), and plots: loss
against simulated time, CDF of round delay, energy per device.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

METRICS = [
    ("time_to_target_s", "time to target loss (s)", ".3f"),
    ("rounds_to_target", "rounds to target", ".1f"),
    ("energy_j", "device energy (J)", ".2f"),
    ("bytes", "bytes up+down", ".0f"),
    ("late", "late", ".1f"),
    ("dropped", "dropped", ".1f"),
    ("final_objective", "final objective", ".3f"),
]


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            if int(b) < int(a):
                raise ValueError(f"--seeds '{text}': range {part} is empty")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"--seeds '{text}': expected e.g. 0-4 or 0,3,7")
    return out


def policy_usage(name: str) -> str:
    """``NAME[:P1[,P2]]`` for one registered policy (its ``[fl]`` parameters, the required ones first)."""
    from .sim.policies import policy_class

    cls = policy_class(name)
    if not cls.parameters:
        return name
    params = ",".join(cls.parameters)
    return f"{name}:{params}" if cls.required else f"{name}[:{params}]"


def policy_overrides(spec: str) -> list[str]:
    """Scenario overrides for one policy spec ``NAME[:P1[,P2...]][@SELECTOR]``: the values go, in
    order, to the policy's ``[fl]`` parameters (its registry entry lists them); the scenario schema
    validates them."""
    from .sim.policies import POLICIES

    name, _, selector = spec.partition("@")
    name, _, param = name.partition(":")
    cls = POLICIES.get(name)
    if cls is None:
        raise ValueError(f"policy '{spec}': unknown name '{name}' ({', '.join(policy_usage(n) for n in POLICIES)})")
    values = param.split(",") if param else []
    if len(values) > len(cls.parameters) or len(values) < len(cls.required):
        raise ValueError(f"policy '{spec}': expected {policy_usage(name)}")
    out = [f"fl.policy='{name}'"] + [f"fl.{key}={value.strip()}" for key, value in zip(cls.parameters, values)]
    if selector:
        out.append(f"fl.selection='{selector}'")
    return out


def _ci95(xs: np.ndarray) -> float:
    from scipy import stats

    xs = xs[np.isfinite(xs)]
    if len(xs) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))


def run_compare(scenario: Optional[str], policies: list[str], seeds: list[int], out_dir: str,
                overrides: Optional[list[str]] = None, target_loss: Optional[float] = None,
                progress=None) -> dict:
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = _run_all(scenario, policies, seeds, out, overrides or [], progress)
    if target_loss is None:
        # The loss every run reaches at least once: the largest of the runs' best losses.
        target_loss = float(np.nanmax([_min_loss(sim) for _, _, sim, _ in runs]))
    df = pd.DataFrame([_run_row(spec, seed, sim, summary, target_loss) for spec, seed, sim, summary in runs])
    df.to_csv(out / "compare.csv", index=False)
    sdf = pd.DataFrame([_policy_row(spec, df[df.policy == spec]) for spec in policies])
    sdf.to_csv(out / "summary.csv", index=False)
    md = summary_markdown(sdf, target_loss, seeds)
    (out / "summary.md").write_text(md)
    plot_compare(runs, out)
    return {"target_loss": target_loss, "table": df, "summary": sdf, "markdown": md}


def _run_all(scenario: Optional[str], policies: list[str], seeds: list[int], out: Path,
             overrides: list[str], progress) -> list[tuple]:
    """Run every policy on every seed (traces in ``out/<policy>/seed<N>/``); one learner per
    distinct learning set-up is shared.  Returns ``(spec, seed, sim, summary)`` per run."""
    from .scenario import load_scenario
    from .sim.builders import build_learner, learner_specs
    from .sim.engine import Simulation

    learners: dict = {}
    runs = []
    for spec in policies:
        extra = policy_overrides(spec)
        for seed in seeds:
            sc = load_scenario(scenario, overrides=[*overrides, *extra], seed=seed)
            key = learner_specs(sc)
            if key not in learners:
                learners[key] = build_learner(sc)
            run_dir = out / spec.replace(":", "_").replace("@", "-").replace(",", "_") / f"seed{seed}"
            sim = Simulation(sc, out_dir=str(run_dir), learner=learners[key])
            summary = sim.run()
            runs.append((spec, seed, sim, summary))
            if progress is not None:
                progress(spec, seed)
    return runs


def _min_loss(sim) -> float:
    losses = [r["train_loss"] for r in sim.rounds if not math.isnan(r["train_loss"])]
    return min(losses) if losses else math.nan


def _run_row(spec: str, seed: int, sim, summary: dict, target_loss: float) -> dict:
    """One row of ``compare.csv``."""
    hit = [r for r in sim.rounds if not math.isnan(r["train_loss"]) and r["train_loss"] <= target_loss]
    return {
        "policy": spec, "seed": seed,
        "time_to_target_s": hit[0]["t_end_s"] if hit else math.nan,
        "rounds_to_target": hit[0]["round"] + 1 if hit else math.nan,
        "energy_j": summary["total_device_energy_j"],
        "bytes": summary["bytes_up"] + summary["bytes_down"],
        "late": summary["late"], "dropped": summary["dropped"],
        "final_objective": summary["final_objective_mean"] if summary["final_objective_mean"] is not None else math.nan,
        "simulated_time_s": summary["simulated_time_s"],
    }


def _policy_row(spec: str, sub) -> dict:
    """One row of ``summary.csv``: mean, 95% CI half-width and runs that reached it, per metric."""
    row = {"policy": spec, "seeds": len(sub)}
    for m, _, _ in METRICS:
        xs = sub[m].to_numpy(dtype=float)
        row[f"{m}_mean"] = float(np.nanmean(xs)) if np.isfinite(xs).any() else math.nan
        row[f"{m}_ci95"] = _ci95(xs)
        row[f"{m}_reached"] = int(np.isfinite(xs).sum())
    return row


def summary_markdown(sdf, target_loss: float, seeds: list[int]) -> str:
    head = "| policy | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [f"Target loss {target_loss:.4f}; seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}); mean ± 95% CI half-width.", "",
             head, "|---" * (len(METRICS) + 1) + "|"]
    for _, row in sdf.iterrows():
        cells = []
        for m, _, fmt in METRICS:
            mean, ci = row[f"{m}_mean"], row[f"{m}_ci95"]
            cell = "n/a" if math.isnan(mean) else format(mean, fmt)
            if not math.isnan(ci):
                cell += f" ± {format(ci, fmt)}"
            if m in ("time_to_target_s", "rounds_to_target") and row[f"{m}_reached"] < row["seeds"]:
                cell += f" ({row[f'{m}_reached']}/{row['seeds']} reached)"
            cells.append(cell)
        lines.append(f"| {row['policy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(plt, fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_compare(runs, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(spec for spec, _, _, _ in runs))
    colors = {p: plt.cm.tab10(i % 10) for i, p in enumerate(policies)}
    return [_plot_loss_vs_time(plt, runs, colors, out), _plot_delay_cdf(plt, runs, policies, colors, out),
            _plot_energy(plt, runs, policies, out)]


def _plot_loss_vs_time(plt, runs, colors: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec, seed, sim, _ in runs:
        t = [r["t_end_s"] for r in sim.rounds]
        loss = [r["train_loss"] for r in sim.rounds]
        ax.plot(t, loss, color=colors[spec], alpha=0.8, lw=1.2, label=spec if seed == runs[0][1] else None)
    return _save(plt, fig, ax, "simulated time (s)", "training loss (aggregated)",
                 "Loss against simulated time (one line per seed)", out / "loss_vs_time.png")


def _plot_delay_cdf(plt, runs, policies: list[str], colors: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in policies:
        d = np.sort([r["t_end_s"] - r["t_start_s"] for s, _, sim, _ in runs if s == spec for r in sim.rounds])
        ax.step(d, np.arange(1, len(d) + 1) / len(d), where="post", color=colors[spec], label=spec)
    return _save(plt, fig, ax, "round delay (s, simulated)", "CDF", "Round delay, all seeds",
                 out / "round_delay_cdf.png")


def _energy_per_device(sim) -> list[float]:
    """Device energy over the run (J), one entry per device (0 for a device that never drew any)."""
    e: dict = {}
    for ev in sim.events:
        if ev["client"] >= 0:
            e[ev["client"]] = e.get(ev["client"], 0.0) + ev["energy_j"]
    return [e.get(d.index, 0.0) for d in sim.devices]


def _plot_energy(plt, runs, policies: list[str], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    data = [[x for s, _, sim, _ in runs if s == spec for x in _energy_per_device(sim)] for spec in policies]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(policies) + 1), policies, rotation=15)
    ax.set_ylabel("energy per device over the run (J)")
    ax.set_title("Energy per device, all seeds")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = out / "energy_per_device.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
