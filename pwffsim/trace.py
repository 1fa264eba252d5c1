"""The one writer of a run's traces.

Tables (each written as ``NAME.parquet`` and ``NAME.csv`` into the run directory; the column order
and types below are the stable schema, documented in the README):

* ``events``  one row per timed activity
* ``rounds``  one row per aggregation round
* ``clients`` one row per selected client per round
* ``final``   one row per client: its final model (global part + its own personal part) evaluated at
  the end of the run (``fl.final_evaluation`` says which clients)
* ``links``   one row per transfer at each rate computation of its band (``trace.links``)

CSV rows are appended and flushed at the end of every round, so a run that is killed keeps every
finished round; the Parquet files are written when the run ends.  Floats are written with ``repr``
(shortest round-trip form), so the same run gives byte-identical files.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .status import Status

# name -> [(column, arrow type, description)]
SCHEMAS: dict[str, list[tuple[str, pa.DataType, str]]] = {
    "events": [
        ("t_start_s", pa.float64(), "simulated start time of the activity (s)"),
        ("t_end_s", pa.float64(), "simulated end time (s)"),
        ("round", pa.int64(), "round index (0-based)"),
        ("client", pa.int64(), "device index; -1 for the server"),
        ("cell", pa.string(), "cell id of the device ('' for the server); the new cell of a handover; the destination node of a backhaul transfer"),
        ("cell_from", pa.string(), "previous cell of a handover, source node of a backhaul transfer ('' otherwise)"),
        ("kind", pa.string(), "download | compute | upload | aggregate | dropout | handover | backhaul | offline | idle (waiting inside a round at the profile's idle_power_w: see README, idle power)"),
        ("bytes", pa.int64(), "payload bytes of the transfer (0 for compute, aggregate, dropout)"),
        ("rate_bps", pa.float64(), "mean rate over the activity: bits actually moved / duration (bit/s); for backhaul rows the route's bottleneck rate (its latency is in the duration, not in the rate)"),
        ("energy_j", pa.float64(), "device energy drawn by this activity (J)"),
        ("battery_j", pa.float64(), "device battery after the activity (J); NaN for the server"),
        ("status", pa.string(), "ok | late (stopped by the deadline or not needed by over-selection) | dropped (battery empty) | offline (device went offline) | error (an upload attempt lost to a packet error and sent again; channel.packet_errors)"),
    ],
    "rounds": [
        ("round", pa.int64(), "round index"),
        ("t_start_s", pa.float64(), "simulated time the round started (selection and broadcast) (s)"),
        ("t_end_s", pa.float64(), "simulated time the aggregation finished (s)"),
        ("selected", pa.int64(), "clients selected (asynchronous policies: clients that finished in this aggregation window)"),
        ("aggregated", pa.int64(), "clients whose update was aggregated"),
        ("late", pa.int64(), "clients stopped by the deadline, or by over-selection once enough had arrived"),
        ("dropped", pa.int64(), "clients whose battery emptied during the round"),
        ("offline", pa.int64(), "clients that went offline during the round (availability trace)"),
        ("bytes_up", pa.int64(), "bytes of the uploads the server received in full"),
        ("bytes_down", pa.int64(), "bytes of the broadcast delivered in full, summed over receivers"),
        ("energy_j", pa.float64(), "device energy drawn by the round's clients (J)"),
        ("train_loss", pa.float64(), "sample-weighted mean local training loss of the aggregated clients (NaN if none)"),
        ("objective", pa.float64(), "mean personalized objective w_help r_help + w_safe r_safe of the clients that trained this round"),
    ],
    "clients": [
        ("round", pa.int64(), "round index"),
        ("client", pa.int64(), "device index"),
        ("profile", pa.string(), "the device's profile name (devices.profiles)"),
        ("train_loss", pa.float64(), "mean loss of the local steps (NaN if the client did not finish computing)"),
        ("eval_loss", pa.float64(), "loss on the client's held-out data after its local update (NaN if not trained; nats, per sample or per token by fl.loss_average)"),
        ("personalization_gap", pa.float64(), "on the same held-out rows: loss of the trained model with its personal part reset to its initial values minus eval_loss (> 0: the personal part helps; NaN without a personal part)"),
        ("eval_loss_others", pa.float64(), "loss of the same model on the reference clients' held-out data (a cross-client measure, not a personalization one)"),
        ("reward_help", pa.float64(), "mean helpfulness of greedy answers to the client's benign metric prompts (its preferred answer forms; a refusal or empty answer scores 0), in [0, 1]"),
        ("reward_help_borderline", pa.float64(), "mean helpfulness (complying) of the answers to its borderline metric requests, in [0, 1]"),
        ("reward_safe", pa.float64(), "mean harmlessness (refusing) of the answers to the same borderline requests, in [0, 1]"),
        ("objective", pa.float64(), "personalized objective: mean over the metric prompts of r_help (benign) or w_help r_help + w_safe r_safe (borderline)"),
        ("align_steps_skipped", pa.int64(), "alignment (RLOO) steps of the local update skipped because every leave-one-out advantage was zero: no optimizer or proximal step (-1 if the client did not finish computing)"),
        ("w_help", pa.float64(), "the client's helpfulness weight (w_safe = 1 - w_help)"),
        ("staleness", pa.int64(), "global versions between the client's download and the aggregation of its update (0 for synchronous policies; -1 if not aggregated)"),
        ("battery_j", pa.float64(), "battery at the end of the client's round (J)"),
        ("energy_j", pa.float64(), "energy the client drew this round (J)"),
        ("status", pa.string(), "ok (aggregated) | late | dropped | offline"),
    ],
    "links": [
        ("t_s", pa.float64(), "simulated time the band (re)computed the transfer's rate (s): its start, and every change of membership of its band, of its own fading block or position sample, and of the membership of a band interfering with it"),
        ("round", pa.int64(), "round index of the transfer"),
        ("client", pa.int64(), "device index"),
        ("cell", pa.string(), "serving cell (whose band carries the transfer)"),
        ("kind", pa.string(), "download | upload"),
        ("x_m", pa.float64(), "device position x at the last position sample (m; NaN out of coverage)"),
        ("y_m", pa.float64(), "device position y (m; NaN out of coverage)"),
        ("distance_m", pa.float64(), "2D distance to the serving base station (m)"),
        ("los", pa.int64(), "line of sight (1) or not (0); -1 out of coverage"),
        ("path_loss_db", pa.float64(), "path loss of the channel model at that distance and LOS state (dB)"),
        ("shadowing_db", pa.float64(), "shadowing loss of the link there (dB; positive = weaker)"),
        ("fading_db", pa.float64(), "block-fading power gain |h|^2 of the current block (dB; 0 without fading)"),
        ("bandwidth_hz", pa.float64(), "bandwidth allocated to the transfer: its FDMA share of the band, or the whole band (Hz)"),
        ("sharing", pa.int64(), "transfers sharing the band then (this one included)"),
        ("interference_dbm_hz", pa.float64(), "interference power spectral density from other cells' uploads (dBm/Hz; -inf if none)"),
        ("snr_mean_db", pa.float64(), "mean SNR over fading: p g / (N0 F b), g the large-scale gain, b the allocated bandwidth, p the power on it (a unicast FDMA download: the base station's P / n), F the receiver's noise factor 10^(NF/10) (dB)"),
        ("sinr_db", pa.float64(), "instantaneous SINR: p g |h|^2 / ((N0 F + I0) b) (dB)"),
        ("rate_bps", pa.float64(), "rate from then on: b log2(1 + SINR), or the truncated Shannon bound (channel.link_abstraction); a multicast's receivers all get the worst one's (bit/s)"),
    ],
    "final": [
        ("client", pa.int64(), "device index"),
        ("w_help", pa.float64(), "the client's helpfulness weight (w_safe = 1 - w_help)"),
        ("trained_rounds", pa.int64(), "rounds in which the client finished a local update"),
        ("eval_loss", pa.float64(), "loss of the client's final model (global part + its personal part) on its held-out data"),
        ("eval_loss_global_only", pa.float64(), "loss of the global part with the personal part at its initial values, on the same rows (= eval_loss without a personal part)"),
        ("personalization_gap", pa.float64(), "eval_loss_global_only - eval_loss (> 0: the personal part helps the client on its own data; 0 for the initial model)"),
        ("eval_loss_others", pa.float64(), "loss of the same model on the reference clients' held-out data (a cross-client measure)"),
        ("reward_help", pa.float64(), "mean helpfulness of its greedy answers to its benign metric prompts"),
        ("reward_help_borderline", pa.float64(), "mean helpfulness (complying) on its borderline metric requests"),
        ("reward_safe", pa.float64(), "mean harmlessness (refusing) on the same borderline requests"),
        ("objective", pa.float64(), "personalized objective (as in the clients table)"),
        ("objective_base", pa.float64(), "the same objective of the initial model (the base: no fine-tuning)"),
        ("objective_always_refuse", pa.float64(), "the same objective of refusing every prompt (the floor no model should be credited for)"),
    ],
}

TABLES = tuple(SCHEMAS)


def columns(table: str) -> list[str]:
    """Column names of ``table``, in the order they are written."""
    return [c for c, _, _ in SCHEMAS[table]]


def column_types(table: str) -> dict[str, pa.DataType]:
    """Column name -> arrow type of ``table``."""
    return {c: t for c, t, _ in SCHEMAS[table]}


def is_text(dtype: pa.DataType) -> bool:
    """Whether a column of this type holds text (the others hold numbers)."""
    return pa.types.is_string(dtype)


def missing_row(table: str) -> dict[str, Any]:
    """What a reader assumes for each column of ``table`` that a trace lacks (an older or hand-made
    one): NaN for numbers, '' for text, and ``ok`` for ``status`` (an activity without a status
    finished)."""
    return {c: Status.OK if c == "status" else "" if is_text(t) else math.nan for c, t, _ in SCHEMAS[table]}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v)
    return str(v)


_COLUMN_SETS = {t: frozenset(columns(t)) for t in TABLES}


class TraceWriter:
    """Collects rows, appends CSV at each :meth:`flush`, writes Parquet at :meth:`close`."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._pending: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        for name in TABLES:
            with open(self.out_dir / f"{name}.csv", "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(columns(name))
            pq_path = self.out_dir / f"{name}.parquet"
            if pq_path.exists():
                pq_path.unlink()  # a stale file from an earlier run must not pass for this one

    def add(self, table: str, **row: Any) -> None:
        if row.keys() != _COLUMN_SETS[table]:
            cols = columns(table)
            missing = [c for c in cols if c not in row]
            extra = [k for k in row if k not in _COLUMN_SETS[table]]
            raise KeyError(f"trace row for '{table}': missing {missing}, unknown {extra}")
        self._pending[table].append(row)

    def flush(self) -> None:
        for name, rows in self._pending.items():
            if not rows:
                continue
            cols = columns(name)
            with open(self.out_dir / f"{name}.csv", "a", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                for r in rows:
                    w.writerow([_fmt(r[c]) for c in cols])
            self._rows[name].extend(rows)
            self._pending[name] = []

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self._rows[table] + self._pending[table]

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.flush()
        for name in TABLES:
            types = column_types(name)
            schema = pa.schema(list(types.items()))
            data = {c: [r[c] for r in self._rows[name]] for c in types}
            table = pa.Table.from_pydict(data, schema=schema)
            pq.write_table(table, self.out_dir / f"{name}.parquet")
        if summary is not None:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def schema_markdown() -> str:
    """The trace schema as Markdown tables (README)."""
    out = []
    for name, cols in SCHEMAS.items():
        out.append(f"#### `{name}`\n\n| column | type | meaning |\n|---|---|---|")
        for c, t, d in cols:
            out.append(f"| `{c}` | {t} | {d} |")
        out.append("")
    return "\n".join(out)
