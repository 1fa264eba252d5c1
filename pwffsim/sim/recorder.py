"""The recorder: the only orchestrator code that names trace columns.

It keeps every row in memory (``events``, ``rounds``, ``clients``, ``final``: the lists the Python API
exposes) and hands each to the run's :class:`~pwffsim.trace.TraceWriter`, whose ``SCHEMAS`` are the
documented column lists.  It also derives the run summary from those rows.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..status import Kind, Status
from .state import ClientOutcome


def _db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 0 else -math.inf


class Recorder:
    """``cell_id(dev)`` names a device's serving cell; ``writer`` (None: rows in memory only) writes."""

    def __init__(self, writer: Any, cell_id: Callable[[Any], str]):
        self.writer = writer
        self.cell_id = cell_id
        self.events: list[dict] = []
        self.rounds: list[dict] = []
        self.clients: list[dict] = []
        self.final: list[dict] = []
        self.links: list[dict] = []
        self._tables = {"events": self.events, "rounds": self.rounds, "clients": self.clients, "final": self.final,
                        "links": self.links}

    def _row(self, table: str, **row: Any) -> None:
        self._tables[table].append(row)
        if self.writer is not None:
            self.writer.add(table, **row)

    def flush(self) -> None:
        """Write the rows so far (at the end of every aggregation, so a killed run keeps them)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close(summary)

    # ------------------------------------------------------------------ events
    def event(self, r: int, dev: Any, kind: str, t0: float, t1: float, nbytes: int, rate: float,
              energy: float, status: str, cell: Optional[str] = None, cell_from: str = "") -> None:
        """One timed activity; ``dev`` None for the server."""
        if cell is None:
            cell = "" if dev is None else self.cell_id(dev)
        self._row(
            "events", t_start_s=float(t0), t_end_s=float(t1), round=r,
            client=-1 if dev is None else dev.index, cell=cell, cell_from=cell_from,
            kind=kind, bytes=int(nbytes), rate_bps=float(rate), energy_j=float(energy),
            battery_j=math.nan if dev is None else float(dev.battery.level_j), status=status,
        )

    def instant(self, r: int, dev: Any, kind: str, t: float, status: str) -> None:
        """An instantaneous event of a device (dropout, offline)."""
        self.event(r, dev, kind, t, t, 0, 0.0, 0.0, status)

    def backhaul(self, r: int, dev: Any, t0: float, t1: float, bottleneck_bps: float, nbytes: int, src: str,
                 dst: str, status: str = Status.OK) -> None:
        """The model part crossing the backhaul from node ``src`` to node ``dst``; its rate is the
        route's bottleneck rate (the latency is not a rate)."""
        self.event(r, dev, Kind.BACKHAUL, t0, t1, nbytes, bottleneck_bps, 0.0, status, cell=dst, cell_from=src)

    def handover(self, r: int, dev: Any, t0: float, t1: float, cell_from: str, cell_to: str) -> None:
        self.event(r, dev, Kind.HANDOVER, t0, t1, 0, 0.0, 0.0, Status.OK, cell=cell_to, cell_from=cell_from)

    def aggregate(self, r: int, t0: float, t1: float, nbytes: int) -> None:
        self.event(r, None, Kind.AGGREGATE, t0, t1, nbytes, 0.0, 0.0, Status.OK)

    # ------------------------------------------------------------------ rounds and clients
    def round_row(self, r: int, t_start: float, t_end: float, outcomes: Sequence[ClientOutcome], aggregated: int,
                  payload_bytes: int, train_loss: float, objective: float) -> None:
        """One aggregation: ``outcomes`` are the clients it accounts for (selected, or finished in the window)."""
        self._row(
            "rounds", round=r, t_start_s=float(t_start), t_end_s=float(t_end), selected=len(outcomes),
            aggregated=aggregated, late=sum(o.status == Status.LATE for o in outcomes),
            dropped=sum(o.status == Status.DROPPED for o in outcomes),
            offline=sum(o.status == Status.OFFLINE for o in outcomes), bytes_up=payload_bytes * aggregated,
            bytes_down=payload_bytes * sum(o.downloaded for o in outcomes),
            energy_j=float(sum(o.energy_j for o in outcomes)), train_loss=train_loss, objective=objective,
        )

    def client_row(self, r: int, out: ClientOutcome, res: Any, staleness: int, w_help: float,
                   battery_j: float, profile: str) -> None:
        """One row of the clients table (metrics NaN where the client did not finish computing)."""
        def metric(name: str) -> float:
            return math.nan if res is None else float(getattr(res, name))

        def optional(name: str) -> float:
            return math.nan if res is None else float(getattr(res, name, math.nan))

        self._row("clients", round=r, client=out.client, profile=profile, train_loss=metric("train_loss"),
                  eval_loss=metric("eval_loss"), personalization_gap=optional("eval_loss_global_only") -
                  metric("eval_loss"), eval_loss_others=metric("eval_loss_others"),
                  reward_help=metric("reward_help"), reward_help_borderline=optional("reward_help_borderline"),
                  reward_safe=metric("reward_safe"), objective=metric("objective"),
                  align_steps_skipped=-1 if res is None else int(getattr(res, "align_steps_skipped", 0)),
                  w_help=float(w_help), staleness=int(staleness),
                  battery_j=float(battery_j), energy_j=float(out.energy_j), status=out.status)

    def link_row(self, t: float, r: int, kind: str, tr: Any, cell: str, sharing: int, xy: Any, parts: Any,
                 fading: float, snr_mean: float) -> None:
        """One transfer's link at a rate computation (see :mod:`pwffsim.sim.linktrace`): ``tr`` the
        transfer (rate, SINR, bandwidth share, interference), ``xy`` its device's sampled position and
        ``parts`` its link's large-scale parts (both None out of coverage), ``fading`` |h|^2 (linear)."""
        where = (dict(x_m=math.nan, y_m=math.nan, distance_m=math.nan, los=-1, path_loss_db=math.inf,
                      shadowing_db=math.nan) if parts is None else
                 dict(x_m=float(xy[0]), y_m=float(xy[1]), distance_m=float(parts.distance_m), los=int(parts.los),
                      path_loss_db=float(parts.path_loss_db), shadowing_db=float(parts.shadowing_db)))
        self._row("links", t_s=float(t), round=int(r), client=int(tr.device), cell=cell, kind=kind, **where,
                  fading_db=_db(fading), bandwidth_hz=float(tr.bandwidth_hz), sharing=int(sharing),
                  interference_dbm_hz=_db(tr.interference_psd_w_per_hz * 1e3), snr_mean_db=_db(snr_mean),
                  sinr_db=_db(tr.sinr), rate_bps=float(tr.rate_bps))

    def trained_rounds(self) -> dict[int, int]:
        """client -> rounds in which it finished a local update."""
        trained: dict[int, int] = {}
        for row in self.clients:
            if not math.isnan(row["train_loss"]):
                trained[row["client"]] = trained.get(row["client"], 0) + 1
        return trained

    def final_row(self, client: int, w_help: float, trained_rounds: int, metrics: dict) -> None:
        """One row of the final table from a learner's metrics (optional ones NaN when absent)."""
        def get(name: str) -> float:
            return float(metrics.get(name, math.nan))

        self._row("final", client=client, w_help=w_help, trained_rounds=trained_rounds,
                  eval_loss=get("eval_loss"), eval_loss_global_only=get("eval_loss_global_only"),
                  personalization_gap=get("eval_loss_global_only") - get("eval_loss"),
                  eval_loss_others=get("eval_loss_others"), reward_help=get("reward_help"),
                  reward_help_borderline=get("reward_help_borderline"), reward_safe=get("reward_safe"),
                  objective=get("objective"), objective_base=get("objective_base"),
                  objective_always_refuse=get("objective_always_refuse"))

    # ------------------------------------------------------------------ summary
    def summary(self, *, scenario: str, seed: int, stopped_reason: str, flops_per_update: float, scheme: str,
                payload_bytes: int, devices_alive: int, models: Optional[dict] = None) -> dict:
        """The run summary: what the run says of itself plus totals of the trace rows; ``models``:
        which model was trained and which was charged (``trained_model``, ``charged_model``)."""
        rounds = self.rounds
        finite = [r["train_loss"] for r in rounds if not math.isnan(r["train_loss"])]
        return {
            "scenario": scenario,
            "seed": seed,
            "rounds": len(rounds),
            "stopped_reason": stopped_reason,
            "simulated_time_s": rounds[-1]["t_end_s"] if rounds else 0.0,
            "total_device_energy_j": float(sum(e["energy_j"] for e in self.events)),
            "bytes_up": int(sum(r["bytes_up"] for r in rounds)),
            "bytes_down": int(sum(r["bytes_down"] for r in rounds)),
            "aggregated_updates": int(sum(r["aggregated"] for r in rounds)),
            "late": int(sum(r["late"] for r in rounds)),
            "dropped": int(sum(r["dropped"] for r in rounds)),
            "offline": int(sum(r["offline"] for r in rounds)),
            "first_train_loss": finite[0] if finite else None,
            "final_train_loss": finite[-1] if finite else None,
            "training_flops_per_update": float(flops_per_update),
            "scheme": scheme,
            "payload_bytes_per_transfer": int(payload_bytes),
            **(models or {}),
            **self._final_means(),
            "devices_alive": int(devices_alive),
        }

    def _final_means(self) -> dict[str, Optional[float]]:
        """Means over devices of the final table (None without one, or where every value is NaN)."""
        final = self.final

        def mean(column: str) -> Optional[float]:
            return finite_mean([f[column] for f in final])

        return {
            "final_objective_mean": mean("objective"),
            "final_eval_loss_mean": mean("eval_loss"),
            "final_personalization_gap_mean": mean("personalization_gap"),
            "final_reward_help_mean": mean("reward_help"),
            "final_reward_help_borderline_mean": mean("reward_help_borderline"),
            "final_reward_safe_mean": mean("reward_safe"),
            "reference_objective_base_mean": mean("objective_base"),
            "reference_objective_always_refuse_mean": mean("objective_always_refuse"),
            "final_cross_client_gap_mean": finite_mean([f["eval_loss_others"] - f["eval_loss"] for f in final]),
        }


def finite_mean(values) -> Optional[float]:
    """Mean of the finite ``values`` (None if there is none)."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None
