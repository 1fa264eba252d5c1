"""The report's figures: each function draws one PNG from a table :mod:`pwffsim.report` derived
from the traces, and returns its path.  Drawing only; nothing here reads a run directory."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .report import CLIENT_KINDS  # noqa: E402
from .status import Kind  # noqa: E402

KIND_COLORS = {
    Kind.DOWNLOAD: "tab:blue",
    Kind.COMPUTE: "tab:orange",
    Kind.UPLOAD: "tab:green",
    "wait": "lightgray",
    Kind.IDLE: "silver",
    "other": "tab:purple",
}
# The stacks of the round-delay bars (columns KEY_s of the breakdown), bottom to top.
_DELAY_STACK = (*((k, k) for k in CLIENT_KINDS), ("wait", "wait (aggregation + idle)"))
DPI = 120
_MAX_LEGEND_CLIENTS = 12


def _bar_width_figsize(n: int, base: float = 7.0) -> tuple[float, float]:
    return (min(max(base, 0.25 * n + 2.0), 18.0), 4.5)


def _thin_ticks(ax, positions, labels, max_ticks: int = 30) -> None:
    positions, labels = list(positions), list(labels)
    step = max(1, math.ceil(len(positions) / max_ticks))
    ax.set_xticks(positions[::step])
    ax.set_xticklabels(labels[::step], rotation=0 if len(positions[::step]) <= 20 else 45,
                       ha="center" if len(positions[::step]) <= 20 else "right")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _legend_right(ax, *handles_labels) -> None:
    ax.legend(*handles_labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)


def round_delay(bd: pd.DataFrame, path: Path) -> Path:
    """Stacked bars of :func:`pwffsim.report.round_delay_breakdown`, one per round."""
    fig, ax = plt.subplots(figsize=_bar_width_figsize(len(bd)))
    x = bd["round"].to_numpy()
    bottom = np.zeros(len(bd))
    edge = "white" if len(bd) <= 40 else None
    for key, label in _DELAY_STACK:
        vals = bd[f"{key}_s"].to_numpy(float)
        ax.bar(x, vals, bottom=bottom, width=0.8, color=KIND_COLORS[key],
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
    _legend_right(ax, handles, labels)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def energy(en: pd.DataFrame, path: Path) -> Path:
    """Stacked bars of :func:`pwffsim.report.energy_by_client`, one per client."""
    fig, ax = plt.subplots(figsize=_bar_width_figsize(len(en)))
    x = np.arange(len(en))
    bottom = np.zeros(len(en))
    for kind in en.columns:
        vals = en[kind].to_numpy(float)
        ax.bar(x, vals, bottom=bottom, width=0.8, color=KIND_COLORS.get(kind),
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
    _legend_right(ax)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _battery_lines(ax, series: dict[int, pd.DataFrame], t_final: float, many: bool) -> bool:
    """One step line per client, held to ``t_final``, with an x where it dropped; whether any did."""
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
    return any_dropped


def battery(series: dict[int, pd.DataFrame], t_final: float, path: Path) -> Path:
    """Battery of each client over simulated time (:func:`pwffsim.report.battery_series`)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    many = len(series) > _MAX_LEGEND_CLIENTS
    any_dropped = _battery_lines(ax, series, t_final, many)
    if not series:
        ax.text(0.5, 0.5, "no battery data", transform=ax.transAxes,
                ha="center", va="center", color="gray")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("battery (J)")
    ax.set_title("Device battery over time" + (f" ({len(series)} clients)" if many else ""))
    handles, labels = ax.get_legend_handles_labels() if not many else ([], [])
    if any_dropped:
        handles.append(Line2D([], [], marker="x", linestyle="none", color="black"))
        labels.append("dropped (battery empty)")
    if handles:
        _legend_right(ax, handles, labels)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def loss(rounds: pd.DataFrame, clients: pd.DataFrame, path: Path) -> Path:
    """Train loss (and mean eval loss of the round's clients) per round and against time."""
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
    return _save(fig, path)
