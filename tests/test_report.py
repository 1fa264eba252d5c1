"""Tests for pwffsim.report on small hand-made trace tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pwffsim import report
from pwffsim.report import (
    battery_series,
    energy_by_client,
    load_traces,
    plot_run,
    round_delay_breakdown,
    summarize,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
POWER_W = {"download": 1.0, "compute": 5.0, "upload": 2.0, "dropout": 0.0}
BATTERY0 = 1000.0

# (round, client, kind, t_start, t_end, status)
#  round 0 [0, 10]:  c0 is the straggler (download 1, compute 3, upload 4 -> wait 2);
#                    c2's upload is late (ends after c0's) and must not count.
#  round 1 [10, 20]: c3 drops out; straggler c0 (1, 2, 2 -> wait 5).
#  round 2 [20, 30]: nobody aggregated (c1 late, c2 dropped); fallback straggler c1,
#                    whose late upload (25..33) is clipped to the round end.
_ACTIVITIES = [
    (0, 0, "download", 0.0, 1.0, "ok"),
    (0, 0, "compute", 1.0, 4.0, "ok"),
    (0, 0, "upload", 4.0, 8.0, "ok"),
    (0, 1, "download", 0.0, 0.5, "ok"),
    (0, 1, "compute", 0.5, 2.0, "ok"),
    (0, 1, "upload", 2.0, 3.0, "ok"),
    (0, 2, "download", 0.0, 2.0, "ok"),
    (0, 2, "compute", 2.0, 5.0, "ok"),
    (0, 2, "upload", 5.0, 12.0, "late"),
    (1, 0, "download", 10.0, 11.0, "ok"),
    (1, 0, "compute", 11.0, 13.0, "ok"),
    (1, 0, "upload", 13.0, 15.0, "ok"),
    (1, 1, "download", 10.0, 11.0, "ok"),
    (1, 1, "compute", 11.0, 12.0, "ok"),
    (1, 1, "upload", 12.0, 14.0, "ok"),
    (1, 3, "download", 10.0, 12.0, "ok"),
    (1, 3, "dropout", 12.0, 13.0, "dropped"),
    (2, 1, "download", 20.0, 22.0, "ok"),
    (2, 1, "compute", 22.0, 25.0, "ok"),
    (2, 1, "upload", 25.0, 33.0, "late"),
    (2, 2, "download", 20.0, 21.0, "ok"),
    (2, 2, "compute", 21.0, 23.0, "ok"),
    (2, 2, "dropout", 23.0, 23.0, "dropped"),
]
_AGGREGATES = [(0, 8.0, 9.0), (1, 15.0, 16.0)]  # (round, t_start, t_end)
_ROUNDS = [
    # round, t0, t1, selected, aggregated, late, dropped, train_loss
    (0, 0.0, 10.0, 3, 2, 1, 0, 2.5),
    (1, 10.0, 20.0, 3, 2, 0, 1, 2.1),
    (2, 20.0, 30.0, 2, 0, 1, 1, np.nan),
]


def make_events() -> pd.DataFrame:
    rows = []
    battery: dict[int, float] = {}
    for rnd, client, kind, t0, t1, status in sorted(_ACTIVITIES, key=lambda a: (a[1], a[4])):
        energy = POWER_W[kind] * (t1 - t0)
        battery[client] = battery.get(client, BATTERY0) - energy
        nbytes = {"download": 4_000, "upload": 2_000}.get(kind, 0)
        rows.append(dict(
            t_start_s=t0, t_end_s=t1, round=rnd, client=client, cell=f"cell{client % 2}",
            kind=kind, bytes=nbytes, rate_bps=(8 * nbytes / (t1 - t0) if nbytes else 0.0),
            energy_j=energy, battery_j=battery[client], status=status,
        ))
    for rnd, t0, t1 in _AGGREGATES:
        rows.append(dict(t_start_s=t0, t_end_s=t1, round=rnd, client=-1, cell="",
                         kind="aggregate", bytes=0, rate_bps=0.0, energy_j=0.0,
                         battery_j=np.nan, status="ok"))
    return pd.DataFrame(rows).sort_values("t_start_s", kind="stable").reset_index(drop=True)


def make_rounds(events: pd.DataFrame) -> pd.DataFrame:
    cev = events[events.client >= 0]
    rows = []
    for rnd, t0, t1, sel, agg, late, dropped, loss in _ROUNDS:
        e = cev[cev["round"] == rnd]
        rows.append(dict(
            round=rnd, t_start_s=t0, t_end_s=t1, selected=sel, aggregated=agg, late=late,
            dropped=dropped, bytes_up=int(e[e.kind == "upload"].bytes.sum()),
            bytes_down=int(e[e.kind == "download"].bytes.sum()),
            energy_j=float(e.energy_j.sum()), train_loss=loss,
        ))
    return pd.DataFrame(rows)


def make_clients(events: pd.DataFrame) -> pd.DataFrame:
    cev = events[events.client >= 0]
    rows = []
    for (rnd, client), e in cev.groupby(["round", "client"]):
        rows.append(dict(round=rnd, client=client, train_loss=2.5 - 0.2 * rnd + 0.01 * client,
                         eval_loss=2.7 - 0.2 * rnd + 0.02 * client,
                         battery_j=float(e.battery_j.iloc[-1]), energy_j=float(e.energy_j.sum()),
                         future_column="ignored"))
    return pd.DataFrame(rows)


def write_run(run_dir, tables, fmt=("parquet", "csv")):
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if "parquet" in fmt:
            df.to_parquet(run_dir / f"{name}.parquet", index=False)
        if "csv" in fmt:
            df.to_csv(run_dir / f"{name}.csv", index=False)
    return run_dir


@pytest.fixture
def tables():
    ev = make_events()
    return {"events": ev, "rounds": make_rounds(ev), "clients": make_clients(ev)}


@pytest.fixture
def run_dir(tmp_path, tables):
    return write_run(tmp_path / "run", tables)


# ---------------------------------------------------------------- loading


def test_load_traces_reads_all_tables(run_dir, tables):
    t = load_traces(run_dir)
    assert set(t) == {"events", "rounds", "clients"}
    assert len(t["events"]) == len(tables["events"])
    assert len(t["rounds"]) == 3
    assert "future_column" in t["clients"].columns  # unknown columns are tolerated


def test_parquet_preferred_over_csv(tmp_path, tables):
    d = write_run(tmp_path / "run", tables)
    # A CSV that disagrees with the parquet: must not be the one read.
    tables["rounds"].assign(train_loss=99.0).to_csv(d / "rounds.csv", index=False)
    assert load_traces(d)["rounds"]["train_loss"].max() < 99.0


def test_csv_only_run(tmp_path, tables):
    d = write_run(tmp_path / "run", tables, fmt=("csv",))
    ev = load_traces(d)["events"]
    server = ev[ev.client == -1]
    assert (server.cell == "").all()  # "" survives the CSV round trip
    assert server.battery_j.isna().all()


@pytest.mark.parametrize("missing", ["events", "rounds", "clients"])
def test_missing_table_raises_naming_it(tmp_path, tables, missing):
    d = write_run(tmp_path / "run", {k: v for k, v in tables.items() if k != missing})
    with pytest.raises(FileNotFoundError, match=missing):
        load_traces(d)
    with pytest.raises(FileNotFoundError, match=missing):
        plot_run(d)


def test_missing_optional_columns_tolerated(tmp_path, tables):
    tables["clients"] = tables["clients"][["round", "client", "train_loss"]]  # no eval_loss
    tables["rounds"] = tables["rounds"].drop(columns=["bytes_up", "energy_j"])
    d = write_run(tmp_path / "run", tables)
    paths = plot_run(d)
    assert all(p.stat().st_size > 0 for p in paths)
    assert summarize(d)["bytes_up"] == 0


# ---------------------------------------------------------------- round delay


def test_round_delay_breakdown_hand_case():
    events = pd.DataFrame({
        "t_start_s": [0.0, 1.0, 4.0, 8.0],
        "t_end_s": [1.0, 4.0, 8.0, 9.0],
        "round": [0, 0, 0, 0],
        "client": [7, 7, 7, -1],
        "kind": ["download", "compute", "upload", "aggregate"],
        "status": ["ok"] * 4,
    })
    rounds = pd.DataFrame({"round": [0], "t_start_s": [0.0], "t_end_s": [10.0]})
    bd = round_delay_breakdown(events, rounds)
    assert list(bd.columns[:5]) == ["round", "download_s", "compute_s", "upload_s", "wait_s"]
    row = bd.iloc[0]
    assert (row.download_s, row.compute_s, row.upload_s) == pytest.approx((1.0, 3.0, 4.0))
    assert row.wait_s == pytest.approx(2.0)
    assert row.straggler == 7


def test_round_delay_breakdown_late_dropped_and_empty_round(tables):
    bd = round_delay_breakdown(tables["events"], tables["rounds"]).set_index("round")
    assert list(bd.index) == [0, 1, 2]
    # Round 0: late client 2 uploads until t=12 but was not aggregated.
    r0 = bd.loc[0]
    assert r0.straggler == 0 and r0.straggler_aggregated
    assert (r0.download_s, r0.compute_s, r0.upload_s, r0.wait_s) == pytest.approx((1, 3, 4, 2))
    # Round 1: client 3 dropped out; straggler client 0.
    r1 = bd.loc[1]
    assert r1.straggler == 0
    assert (r1.download_s, r1.compute_s, r1.upload_s, r1.wait_s) == pytest.approx((1, 2, 2, 5))
    # Round 2: nobody aggregated -> client whose activities ended last (1);
    # its late upload (25..33) is clipped to the round end at 30.
    r2 = bd.loc[2]
    assert r2.straggler == 1 and not r2.straggler_aggregated
    assert (r2.download_s, r2.compute_s, r2.upload_s, r2.wait_s) == pytest.approx((2, 3, 5, 0))
    # Stacks add up to the round delay.
    parts = bd[["download_s", "compute_s", "upload_s", "wait_s"]].sum(axis=1)
    assert np.allclose(parts, bd.delay_s)


def test_round_without_client_events_is_all_wait():
    events = pd.DataFrame({"t_start_s": [1.0], "t_end_s": [2.0], "round": [0], "client": [-1],
                           "kind": ["aggregate"], "status": ["ok"]})
    rounds = pd.DataFrame({"round": [0, 1], "t_start_s": [0.0, 5.0], "t_end_s": [5.0, 9.0]})
    bd = round_delay_breakdown(events, rounds)
    assert list(bd.wait_s) == pytest.approx([5.0, 4.0])
    assert list(bd.straggler) == [-1, -1]


# ---------------------------------------------------------------- energy / battery


def test_energy_by_client(tables):
    en = energy_by_client(tables["events"])
    assert list(en.columns) == ["download", "compute", "upload"]
    assert list(en.index) == [0, 1, 2, 3]
    # client 0: download 1+1 s @1 W, compute 3+2 s @5 W, upload 4+2 s @2 W
    assert en.loc[0].tolist() == pytest.approx([2.0, 25.0, 12.0])
    assert en.to_numpy().sum() == pytest.approx(tables["events"].energy_j.sum())


def test_battery_series_starts_full(tables):
    s = battery_series(tables["events"])
    assert set(s) == {0, 1, 2, 3}
    for series in s.values():
        assert series.t_s.iloc[0] == 0.0
        assert series.battery_j.iloc[0] == pytest.approx(BATTERY0)
        assert series.t_s.is_monotonic_increasing
        assert series.battery_j.is_monotonic_decreasing


# ---------------------------------------------------------------- plots / summary


def _assert_pngs(paths, out_dir):
    names = {"round_delay.png", "energy_per_device.png", "battery.png", "loss.png"}
    assert {p.name for p in paths} == names
    for p in paths:
        assert p.parent == out_dir
        data = p.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), p


def test_plot_run_writes_four_pngs(run_dir):
    paths = plot_run(run_dir)
    _assert_pngs(paths, run_dir / "plots")


def test_plot_run_custom_out_dir_csv_only(tmp_path, tables):
    d = write_run(tmp_path / "run", tables, fmt=("csv",))
    out = tmp_path / "figs" / "nested"
    paths = plot_run(d, out_dir=out)
    _assert_pngs(paths, out)


def test_plot_run_many_clients(tmp_path):
    """30 clients x 25 rounds: exercises thin lines / no legend / tick thinning."""
    rng = np.random.default_rng(0)
    rows, rounds, clients = [], [], []
    battery = {c: 500.0 for c in range(30)}
    t = 0.0
    for r in range(25):
        t_end = t
        for c in rng.choice(30, size=10, replace=False):
            tt = t
            for kind in ("download", "compute", "upload"):
                d = float(rng.uniform(0.5, 3.0))
                e = POWER_W[kind] * d
                battery[c] -= e
                rows.append(dict(t_start_s=tt, t_end_s=tt + d, round=r, client=int(c),
                                 cell="a", kind=kind, bytes=100, rate_bps=1e6, energy_j=e,
                                 battery_j=battery[c], status="ok"))
                tt += d
            t_end = max(t_end, tt)
            clients.append(dict(round=r, client=int(c), train_loss=1.0, eval_loss=1.1,
                                battery_j=battery[c], energy_j=0.0))
        rounds.append(dict(round=r, t_start_s=t, t_end_s=t_end + 1, selected=10,
                           aggregated=10, late=0, dropped=0, bytes_up=1000, bytes_down=1000,
                           energy_j=0.0, train_loss=3.0 / (r + 1)))
        t = t_end + 1
    d = write_run(tmp_path / "run", {"events": pd.DataFrame(rows),
                                      "rounds": pd.DataFrame(rounds),
                                      "clients": pd.DataFrame(clients)}, fmt=("parquet",))
    _assert_pngs(plot_run(d), d / "plots")


def test_summarize(run_dir, tables):
    s = summarize(run_dir)
    assert s["rounds"] == 3
    assert s["simulated_time_s"] == pytest.approx(33.0)  # late upload runs past the last round
    ev = tables["events"]
    assert s["total_device_energy_j"] == pytest.approx(ev[ev.client >= 0].energy_j.sum())
    assert s["bytes_up"] == int(tables["rounds"].bytes_up.sum())
    assert s["bytes_down"] == int(tables["rounds"].bytes_down.sum())
    assert s["final_train_loss"] == pytest.approx(2.1)  # last non-NaN round
    assert (s["late"], s["dropped"]) == (2, 2)
    text = report.format_summary(s)
    assert "total_device_energy_j" in text and not math.isnan(s["final_train_loss"])


def test_reads_what_trace_writer_writes(tmp_path, tables):
    """Round-trip through the run's own writer: mid-run (CSV only, parquet is
    written at close) and after close (parquet)."""
    trace = pytest.importorskip("pwffsim.trace")
    d = tmp_path / "run"
    w = trace.TraceWriter(d)
    clients = tables["clients"].drop(columns=["future_column"]).assign(status="ok")
    for name, df in (("events", tables["events"]), ("rounds", tables["rounds"]),
                     ("clients", clients)):
        cols = [c for c, _, _ in trace.SCHEMAS[name]]
        df = df.reindex(columns=cols)  # columns added to the schema later: NaN (strings: empty)
        for col, typ in trace.column_types(name).items():  # text columns added to the schema later: ""
            if trace.is_text(typ):
                df[col] = df[col].astype(object).fillna("")
        for col in ("staleness", "offline", "align_steps_skipped"):  # integer columns added later
            if col in df:
                df[col] = df[col].fillna(0).astype(int)
        for rec in df.to_dict("records"):
            w.add(name, **{k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()})
    w.flush()
    assert not (d / "events.parquet").exists()
    bd_csv = round_delay_breakdown(load_traces(d)["events"], load_traces(d)["rounds"])
    w.close()
    assert (d / "events.parquet").exists()
    t = load_traces(d)
    bd_pq = round_delay_breakdown(t["events"], t["rounds"])
    pd.testing.assert_frame_equal(bd_csv, bd_pq)
    assert bd_pq.wait_s.tolist() == pytest.approx([2.0, 5.0, 0.0])
    _assert_pngs(plot_run(d), d / "plots")
