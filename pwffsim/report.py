"""Post-run reporting: load a run's trace tables and draw summary plots.

A run directory holds three trace tables, each as ``NAME.parquet`` and/or
``NAME.csv`` (parquet is preferred when both exist):

``events``
    One row per timed activity: ``t_start_s, t_end_s, round, client, cell,
    kind, bytes, rate_bps, energy_j, battery_j, status``.  ``kind`` is one of
    download / compute / upload / aggregate / dropout; server rows
    (aggregate) have ``client == -1``, ``cell == ""`` and a NaN battery.
    ``status`` is ok / late / dropped.
``rounds``
    One row per round: ``round, t_start_s, t_end_s, selected, aggregated,
    late, dropped, bytes_up, bytes_down, energy_j, train_loss``.
``clients``
    One row per selected client per round: ``round, client, train_loss,
    eval_loss, battery_j, energy_j``.

Unknown extra columns are ignored; missing optional columns are filled with
NaN (or a neutral default), missing required ones raise ``ValueError``.

Usage::

    from pwffsim.report import plot_run, summarize
    paths = plot_run("runs/exp1")          # -> runs/exp1/plots/*.png
    print(format_summary(summarize("runs/exp1")))

or from the shell: ``python -m pwffsim.report RUN_DIR [--out OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "TABLES",
    "load_traces",
    "round_delay_breakdown",
    "energy_by_client",
    "battery_series",
    "plot_run",
    "summarize",
    "format_summary",
]

TABLES = ("events", "rounds", "clients")

# Required columns per table; anything else is optional.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "events": ("t_start_s", "t_end_s", "round", "client", "kind"),
    "rounds": ("round", "t_start_s", "t_end_s"),
    "clients": ("round", "client"),
}
# Optional columns and the value used when they are absent.
_OPTIONAL: dict[str, dict[str, Any]] = {
    "events": {
        "cell": "",
        "bytes": 0,
        "rate_bps": np.nan,
        "energy_j": 0.0,
        "battery_j": np.nan,
        "status": "ok",
    },
    "rounds": {
        "selected": np.nan,
        "aggregated": np.nan,
        "late": 0,
        "dropped": 0,
        "bytes_up": 0,
        "bytes_down": 0,
        "energy_j": np.nan,
        "train_loss": np.nan,
    },
    "clients": {
        "train_loss": np.nan,
        "eval_loss": np.nan,
        "battery_j": np.nan,
        "energy_j": np.nan,
    },
}

CLIENT_KINDS = ("download", "compute", "upload")
_KIND_COLORS = {
    "download": "tab:blue",
    "compute": "tab:orange",
    "upload": "tab:green",
    "wait": "lightgray",
    "other": "tab:purple",
}
DPI = 120
_MAX_LEGEND_CLIENTS = 12


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _read_table(run_dir: Path, name: str) -> pd.DataFrame:
    pq, csv = run_dir / f"{name}.parquet", run_dir / f"{name}.csv"
    if pq.is_file():
        df = pd.read_parquet(pq)
    elif csv.is_file():
        # keep_default_na=True turns "" cells into NaN; fixed below for text cols
        df = pd.read_csv(csv)
    else:
        raise FileNotFoundError(
            f"trace table '{name}' not found in {run_dir}: "
            f"expected {pq.name} or {csv.name}"
        )
    return _normalize(df, name, source=pq if pq.is_file() else csv)


def _normalize(df: pd.DataFrame, name: str, source: Path | str = "") -> pd.DataFrame:
    df = df.copy()
    missing = [c for c in _REQUIRED[name] if c not in df.columns]
    if missing:
        raise ValueError(f"trace table '{name}' ({source}) lacks required columns {missing}")
    for col, default in _OPTIONAL[name].items():
        if col not in df.columns:
            df[col] = default
    df["round"] = pd.to_numeric(df["round"], errors="coerce").astype("Int64")
    if "client" in df.columns:
        df["client"] = pd.to_numeric(df["client"], errors="coerce").fillna(-1).astype(int)
    if name == "events":
        for col in ("kind", "status", "cell"):
            df[col] = df[col].fillna("").astype(str)
        df["kind"] = df["kind"].str.strip().str.lower()
        df["status"] = df["status"].str.strip().str.lower()
        for col in ("t_start_s", "t_end_s", "energy_j", "battery_j", "bytes", "rate_bps"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        df["t_end_s"] = df["t_end_s"].fillna(df["t_start_s"])
        df["energy_j"] = df["energy_j"].fillna(0.0)
    df.attrs["pwffsim_table"] = name
    return df


def load_traces(run_dir) -> dict[str, pd.DataFrame]:
    """Load the ``events``, ``rounds`` and ``clients`` tables of a run.

    Reads ``NAME.parquet`` if present, else ``NAME.csv``.  Raises
    ``FileNotFoundError`` naming the first table for which neither exists.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    return {name: _read_table(run_dir, name) for name in TABLES}


def _coerce(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Normalize a raw frame (e.g. built in a test or notebook) unless it came
    from :func:`load_traces` already."""
    if df.attrs.get("pwffsim_table") == name:
        return df
    return _normalize(df, name)


# --------------------------------------------------------------------------
# Derived tables
# --------------------------------------------------------------------------


def _clipped_duration(rows: pd.DataFrame, t0: float, t1: float) -> float:
    """Total time of ``rows`` that falls inside the round window [t0, t1]."""
    if rows.empty:
        return 0.0
    start = rows["t_start_s"].to_numpy(float)
    end = rows["t_end_s"].to_numpy(float)
    if np.isfinite(t0):
        start = np.maximum(start, t0)
    if np.isfinite(t1):
        end = np.minimum(end, t1)
    return float(np.clip(end - start, 0.0, None).sum())


def _aggregated_clients(ev: pd.DataFrame) -> pd.Index:
    """Clients of one round whose upload arrived in time (status ok) and who
    were not dropped."""
    ok_up = ev[(ev["kind"] == "upload") & (ev["status"] == "ok")]["client"].unique()
    dropped = ev[(ev["status"] == "dropped") | (ev["kind"] == "dropout")]["client"].unique()
    return pd.Index(ok_up).difference(pd.Index(dropped))


def round_delay_breakdown(events: pd.DataFrame, rounds: pd.DataFrame) -> pd.DataFrame:
    """Split each round's delay into download / compute / upload / wait.

    For each round the *straggler* is the aggregated client (upload status ok,
    not dropped) whose upload ended last; if nobody was aggregated, it is the
    selected client whose activities ended last.  Its download, compute and
    upload durations (summed over repeated activities of that kind and
    clipped to the round window) are reported, and
    ``wait_s = (t_end_s - t_start_s) - download_s - compute_s - upload_s``
    (aggregation, idle time, waiting for the deadline), floored at 0.

    Returns one row per round of ``rounds`` with columns ``round, download_s,
    compute_s, upload_s, wait_s, delay_s, straggler, straggler_aggregated``
    (``straggler`` is -1 when the round has no client activity).
    """
    events = _coerce(events, "events")
    rounds = _coerce(rounds, "rounds")
    cev = events[events["client"] >= 0]
    by_round = {r: g for r, g in cev.groupby("round", sort=False)}
    out = []
    for _, rr in rounds.sort_values("round").iterrows():
        r = rr["round"]
        t0, t1 = float(rr["t_start_s"]), float(rr["t_end_s"])
        delay = t1 - t0 if np.isfinite(t1 - t0) else 0.0
        ev = by_round.get(r, cev.iloc[0:0])
        straggler, agg_flag = -1, False
        if not ev.empty:
            agg = _aggregated_clients(ev)
            if len(agg):
                ups = ev[(ev["kind"] == "upload") & ev["client"].isin(agg)]
                straggler = int(ups.loc[ups["t_end_s"].idxmax(), "client"])
                agg_flag = True
            else:
                straggler = int(ev.loc[ev["t_end_s"].idxmax(), "client"])
        parts = {}
        sev = ev[ev["client"] == straggler]
        for kind in CLIENT_KINDS:
            parts[f"{kind}_s"] = _clipped_duration(sev[sev["kind"] == kind], t0, t1)
        wait = max(0.0, delay - sum(parts.values()))
        out.append(
            {
                "round": int(r),
                **parts,
                "wait_s": wait,
                "delay_s": delay,
                "straggler": straggler,
                "straggler_aggregated": agg_flag,
            }
        )
    cols = ["round", "download_s", "compute_s", "upload_s", "wait_s", "delay_s",
            "straggler", "straggler_aggregated"]
    return pd.DataFrame(out, columns=cols)


def energy_by_client(events: pd.DataFrame) -> pd.DataFrame:
    """Total device energy (J) per client, one column per activity kind.

    Columns ``download, compute, upload`` always exist; energy booked on any
    other kind (e.g. dropout) is lumped into ``other`` if non-zero.
    """
    events = _coerce(events, "events")
    cev = events[events["client"] >= 0]
    tab = cev.pivot_table(index="client", columns="kind", values="energy_j",
                          aggfunc="sum", fill_value=0.0)
    res = pd.DataFrame(index=tab.index)
    for kind in CLIENT_KINDS:
        res[kind] = tab[kind] if kind in tab.columns else 0.0
    other = [c for c in tab.columns if c not in CLIENT_KINDS]
    if other and float(tab[other].to_numpy().sum()) != 0.0:
        res["other"] = tab[other].sum(axis=1)
    return res.sort_index()


def battery_series(events: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per-client battery level over simulated time.

    Each series starts at t=0 with ``battery_j + energy_j`` of the client's
    first event, followed by ``(t_end_s, battery_j)`` for every event.
    """
    events = _coerce(events, "events")
    cev = events[(events["client"] >= 0) & events["battery_j"].notna()]
    series: dict[int, pd.DataFrame] = {}
    for client, g in cev.groupby("client"):
        g = g.sort_values(["t_end_s", "t_start_s"], kind="stable")
        first = g.iloc[0]
        t = np.concatenate([[0.0], g["t_end_s"].to_numpy(float)])
        b = np.concatenate(
            [[first["battery_j"] + first["energy_j"]], g["battery_j"].to_numpy(float)]
        )
        dropped = np.concatenate([[False], (g["status"] == "dropped").to_numpy()])
        series[int(client)] = pd.DataFrame({"t_s": t, "battery_j": b, "dropped": dropped})
    return series


# --------------------------------------------------------------------------
# Plotting
# --------------------------------------------------------------------------


def _bar_width_figsize(n: int, base: float = 7.0) -> tuple[float, float]:
    return (min(max(base, 0.25 * n + 2.0), 18.0), 4.5)


def _thin_ticks(ax, positions, labels, max_ticks: int = 30) -> None:
    positions, labels = list(positions), list(labels)
    step = max(1, math.ceil(len(positions) / max_ticks))
    ax.set_xticks(positions[::step])
    ax.set_xticklabels(labels[::step], rotation=0 if len(positions[::step]) <= 20 else 45,
                       ha="center" if len(positions[::step]) <= 20 else "right")


def _plot_round_delay(bd: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=_bar_width_figsize(len(bd)))
    x = bd["round"].to_numpy()
    bottom = np.zeros(len(bd))
    edge = "white" if len(bd) <= 40 else None
    for key, label in (("download", "download"), ("compute", "compute"),
                       ("upload", "upload"), ("wait", "wait (aggregation + idle)")):
        vals = bd[f"{key}_s"].to_numpy(float)
        ax.bar(x, vals, bottom=bottom, width=0.8, color=_KIND_COLORS[key],
               label=label, edgecolor=edge, linewidth=0.5)
        bottom += vals
    handles, labels = ax.get_legend_handles_labels()
    no_agg = ~bd["straggler_aggregated"].to_numpy(bool)
    if no_agg.any():
        ax.bar(x[no_agg], bd["delay_s"].to_numpy(float)[no_agg], width=0.8,
               fill=False, hatch="//", edgecolor="dimgray", linewidth=0)
        handles.append(Patch(facecolor="none", hatch="//", edgecolor="dimgray"))
        labels.append("no client aggregated")
    ax.set_xlabel("round")
    ax.set_ylabel("seconds (simulated)")
    ax.set_title("Round delay breakdown (straggler client per round)")
    _thin_ticks(ax, x, [str(v) for v in x])
    ax.margins(x=0.01)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plot_energy(en: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=_bar_width_figsize(len(en)))
    x = np.arange(len(en))
    bottom = np.zeros(len(en))
    for kind in en.columns:
        vals = en[kind].to_numpy(float)
        ax.bar(x, vals, bottom=bottom, width=0.8, color=_KIND_COLORS.get(kind),
               label=kind, edgecolor="white" if len(en) <= 40 else None, linewidth=0.5)
        bottom += vals
    if len(en) == 0:
        ax.text(0.5, 0.5, "no client activity", transform=ax.transAxes,
                ha="center", va="center", color="gray")
    ax.set_xlabel("client")
    ax.set_ylabel("energy (J)")
    ax.set_title("Device energy per client, by activity")
    _thin_ticks(ax, x, [str(c) for c in en.index])
    ax.margins(x=0.01)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plot_battery(series: dict[int, pd.DataFrame], t_final: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    many = len(series) > _MAX_LEGEND_CLIENTS
    any_dropped = False
    for client, s in series.items():
        t, b = s["t_s"].to_numpy(float), s["battery_j"].to_numpy(float)
        if np.isfinite(t_final) and t_final > t[-1]:  # hold last level to run end
            t, b = np.append(t, t_final), np.append(b, b[-1])
        (line,) = ax.step(t, b, where="post", linewidth=0.6 if many else 1.4,
                          alpha=0.6 if many else 1.0, label=f"client {client}")
        d = s[s["dropped"]]
        if not d.empty:
            any_dropped = True
            ax.plot(d["t_s"], d["battery_j"], "x", color=line.get_color(),
                    markersize=7, markeredgewidth=1.5)
    if not series:
        ax.text(0.5, 0.5, "no battery data", transform=ax.transAxes,
                ha="center", va="center", color="gray")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("battery (J)")
    title = "Device battery over time"
    if many:
        title += f" ({len(series)} clients)"
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels() if not many else ([], [])
    if any_dropped:
        handles.append(Line2D([], [], marker="x", linestyle="none", color="black"))
        labels.append("dropped (battery empty)")
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plot_loss(rounds: pd.DataFrame, clients: pd.DataFrame, path: Path) -> Path:
    r = rounds.sort_values("round")
    ev = (clients.groupby("round")["eval_loss"].mean()
          if "eval_loss" in clients.columns else pd.Series(dtype=float))
    ev = ev.reindex(r["round"].to_numpy())
    has_eval = ev.notna().any()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5))
    for ax, x, xlabel in ((ax1, r["round"].to_numpy(float), "round"),
                          (ax2, r["t_end_s"].to_numpy(float), "simulated time at round end (s)")):
        ax.plot(x, r["train_loss"].to_numpy(float), marker="o", markersize=3,
                color="tab:blue", label="train loss (aggregated)")
        if has_eval:
            ax.plot(x, ev.to_numpy(float), marker="s", markersize=3,
                    color="tab:red", label="eval loss (mean over selected clients)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title("Loss per round")
    ax2.set_title("Loss vs simulated time")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """Write the report PNGs for a run and return their paths.

    Files (in ``out_dir``, default ``run_dir/"plots"``): ``round_delay.png``,
    ``energy_per_device.png``, ``battery.png``, ``loss.png``.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    t = load_traces(run_dir)
    events, rounds, clients = t["events"], t["rounds"], t["clients"]
    t_final = np.nanmax([rounds["t_end_s"].max(), events["t_end_s"].max(), 0.0])
    return [
        _plot_round_delay(round_delay_breakdown(events, rounds), out / "round_delay.png"),
        _plot_energy(energy_by_client(events), out / "energy_per_device.png"),
        _plot_battery(battery_series(events), float(t_final), out / "battery.png"),
        _plot_loss(rounds, clients, out / "loss.png"),
    ]


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------


def summarize(run_dir) -> dict:
    """Headline totals of a run (plain Python scalars, JSON-friendly).

    ``final_train_loss`` is the train loss of the last round that has one
    (rounds where nobody was aggregated may carry NaN).
    """
    t = load_traces(run_dir)
    events, rounds = t["events"], t["rounds"]
    cev = events[events["client"] >= 0]
    loss = rounds.sort_values("round")["train_loss"].dropna()
    sim_time = np.nanmax([rounds["t_end_s"].max(), events["t_end_s"].max()]) \
        if len(rounds) or len(events) else 0.0
    status = cev["status"].value_counts()
    return {
        "rounds": int(rounds["round"].nunique()),
        "simulated_time_s": float(sim_time) if np.isfinite(sim_time) else 0.0,
        "total_device_energy_j": float(cev["energy_j"].sum()),
        "bytes_up": int(pd.to_numeric(rounds["bytes_up"], errors="coerce").fillna(0).sum()),
        "bytes_down": int(pd.to_numeric(rounds["bytes_down"], errors="coerce").fillna(0).sum()),
        "final_train_loss": float(loss.iloc[-1]) if len(loss) else float("nan"),
        "late": int(pd.to_numeric(rounds["late"], errors="coerce").fillna(0).sum()),
        "dropped": int(pd.to_numeric(rounds["dropped"], errors="coerce").fillna(0).sum()),
        "late_events": int(status.get("late", 0)),
        "dropped_events": int(status.get("dropped", 0)),
        "clients": int(cev["client"].nunique()),
    }


def format_summary(summary: dict) -> str:
    """Human-readable multi-line rendering of :func:`summarize`'s output."""
    def fmt(k, v):
        if isinstance(v, float):
            return f"{v:,.4g}" if k == "final_train_loss" else f"{v:,.3f}"
        if isinstance(v, int) and k.startswith("bytes"):
            return f"{v:,} B ({v / 1e6:,.2f} MB)"
        return str(v)
    width = max(len(k) for k in summary)
    return "\n".join(f"{k:<{width}}  {fmt(k, v)}" for k, v in summary.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pwffsim.report",
                                description="Plot and summarize a pwffsim run.")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output dir (default RUN_DIR/plots)")
    a = p.parse_args(argv)
    print(format_summary(summarize(a.run_dir)))
    for path in plot_run(a.run_dir, a.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
