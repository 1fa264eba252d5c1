"""Post-run reporting: load a run's trace tables and draw summary plots.

A run directory holds the trace tables :mod:`pwffsim.trace` writes, each as
``NAME.parquet`` and/or ``NAME.csv`` (parquet is preferred when both exist).
The report reads ``events`` (one row per timed activity), ``rounds`` (one row
per round) and ``clients`` (one row per selected client per round); their
columns and types are ``pwffsim.trace.SCHEMAS`` (the README's trace schema).

Unknown extra columns are ignored; missing columns are filled in as
:func:`pwffsim.trace.missing_row` says (NaN for numbers, "" for text, ``ok``
for ``status``); missing required ones (``_REQUIRED``) raise ``ValueError``.

Usage::

    from pwffsim.report import plot_run, summarize
    paths = plot_run("runs/exp1")          # -> runs/exp1/plots/*.png
    print(format_summary(summarize("runs/exp1")))

or from the shell: ``python -m pwffsim.report RUN_DIR [--out OUT_DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from . import trace
from .status import Kind, Status

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

# Columns each table the report reads must have ("final" is not reported on); every other
# column of trace.SCHEMAS is optional.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "events": ("t_start_s", "t_end_s", "round", "client", "kind"),
    "rounds": ("round", "t_start_s", "t_end_s"),
    "clients": ("round", "client"),
}
assert all(set(cols) <= set(trace.columns(name)) for name, cols in _REQUIRED.items())
TABLES = tuple(_REQUIRED)

CLIENT_KINDS = (Kind.DOWNLOAD, Kind.COMPUTE, Kind.UPLOAD)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _read_table(run_dir: Path, name: str) -> pd.DataFrame:
    pq, csv = run_dir / f"{name}.parquet", run_dir / f"{name}.csv"
    if pq.is_file():
        df = pd.read_parquet(pq)
    elif csv.is_file():
        # keep_default_na=True turns "" cells into NaN; _normalize fixes the text columns
        df = pd.read_csv(csv)
    else:
        raise FileNotFoundError(
            f"trace table '{name}' not found in {run_dir}: "
            f"expected {pq.name} or {csv.name}"
        )
    return _normalize(df, name, source=pq if pq.is_file() else csv)


def _normalize(df: pd.DataFrame, name: str, source: Path | str = "") -> pd.DataFrame:
    missing = [c for c in _REQUIRED[name] if c not in df.columns]
    if missing:
        raise ValueError(f"trace table '{name}' ({source}) lacks required columns {missing}")
    df = df.copy()
    for col, default in trace.missing_row(name).items():
        if col not in df.columns:
            df[col] = default
    _coerce_types(df, name)
    if name == "events":
        df["t_end_s"] = df["t_end_s"].fillna(df["t_start_s"])
        df["energy_j"] = df["energy_j"].fillna(0.0)
    df.attrs["pwffsim_table"] = name
    return df


def _coerce_types(df: pd.DataFrame, name: str) -> None:
    """Give each column of the schema its type: ``round`` nullable int, ``client`` int (-1 if
    unknown), text as ``str`` ("" for a NaN cell, as CSV reads "") with ``kind`` and ``status``
    stripped and lower-cased, every other column numeric."""
    df["round"] = pd.to_numeric(df["round"], errors="coerce").astype("Int64")
    if "client" in df.columns:
        df["client"] = pd.to_numeric(df["client"], errors="coerce").fillna(-1).astype(int)
    for col, dtype in trace.column_types(name).items():
        if trace.is_text(dtype):
            df[col] = df[col].astype(object).fillna("").astype(str)
            if col in ("kind", "status"):
                df[col] = df[col].str.strip().str.lower()
        elif col not in ("round", "client"):
            df[col] = pd.to_numeric(df[col], errors="coerce")


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
    were not dropped before it arrived (one whose battery empties afterwards,
    idle while waiting for the aggregation, is still aggregated)."""
    arrived = ev[(ev["kind"] == Kind.UPLOAD) & (ev["status"] == Status.OK)].groupby("client")["t_end_s"].max()
    gone = ev[(ev["status"] == Status.DROPPED) | (ev["kind"] == Kind.DROPOUT)].groupby("client")["t_start_s"].min()
    before = [k for k in arrived.index if k in gone.index and gone[k] < arrived[k]]
    return pd.Index(arrived.index.unique()).difference(pd.Index(before))


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
                ups = ev[(ev["kind"] == Kind.UPLOAD) & ev["client"].isin(agg)]
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

    Columns ``download, compute, upload`` always exist; ``idle`` if idle power
    drew anything; energy booked on any other kind is lumped into ``other`` if
    non-zero.
    """
    events = _coerce(events, "events")
    cev = events[events["client"] >= 0]
    tab = cev.pivot_table(index="client", columns="kind", values="energy_j",
                          aggfunc="sum", fill_value=0.0)
    res = pd.DataFrame(index=tab.index)
    for kind in CLIENT_KINDS:
        res[kind] = tab[kind] if kind in tab.columns else 0.0
    if Kind.IDLE in tab.columns and float(tab[Kind.IDLE].sum()) != 0.0:
        res[Kind.IDLE] = tab[Kind.IDLE]
    other = [c for c in tab.columns if c not in (*CLIENT_KINDS, Kind.IDLE)]
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
        dropped = np.concatenate([[False], (g["status"] == Status.DROPPED).to_numpy()])
        series[int(client)] = pd.DataFrame({"t_s": t, "battery_j": b, "dropped": dropped})
    return series


# --------------------------------------------------------------------------
# Plotting (the figures themselves are in pwffsim.plots)
# --------------------------------------------------------------------------


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """Write the report PNGs for a run and return their paths.

    Files (in ``out_dir``, default ``run_dir/"plots"``): ``round_delay.png``,
    ``energy_per_device.png``, ``battery.png``, ``loss.png``.
    """
    from . import plots

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    t = load_traces(run_dir)
    events, rounds, clients = t["events"], t["rounds"], t["clients"]
    t_final = np.nanmax([rounds["t_end_s"].max(), events["t_end_s"].max(), 0.0])
    return [
        plots.round_delay(round_delay_breakdown(events, rounds), out / "round_delay.png"),
        plots.energy(energy_by_client(events), out / "energy_per_device.png"),
        plots.battery(battery_series(events), float(t_final), out / "battery.png"),
        plots.loss(rounds, clients, out / "loss.png"),
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

    def total(col: str) -> int:
        return int(rounds[col].fillna(0).sum())

    return {
        "rounds": int(rounds["round"].nunique()),
        "simulated_time_s": float(sim_time) if np.isfinite(sim_time) else 0.0,
        "total_device_energy_j": float(cev["energy_j"].sum()),
        "bytes_up": total("bytes_up"),
        "bytes_down": total("bytes_down"),
        "final_train_loss": float(loss.iloc[-1]) if len(loss) else float("nan"),
        "late": total("late"),
        "dropped": total("dropped"),
        "late_events": int(status.get(Status.LATE, 0)),
        "dropped_events": int(status.get(Status.DROPPED, 0)),
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
