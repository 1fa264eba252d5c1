"""Every shipped example scenario (one per topology, one per trace) runs end to end through the CLI."""
from pathlib import Path

import pandas as pd
import pytest

from pwffsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "topologies" / "examples").glob("*.toml")) + sorted((ROOT / "traces" / "examples").glob("*.toml"))


def test_there_is_an_example_for_each_topology_and_trace():
    topologies = {p.stem for p in (ROOT / "topologies").glob("*.toml")}
    assert topologies <= {p.stem for p in (ROOT / "topologies" / "examples").glob("*.toml")}
    traces = {p.name for p in (ROOT / "traces").iterdir() if p.suffix in (".xml", ".ns2", ".csv")}
    used = " ".join(p.read_text() for p in (ROOT / "traces" / "examples").glob("*.toml"))
    assert all(t in used for t in traces), traces


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_end_to_end(path, tmp_path):
    assert main(["run", str(path), "--out", str(tmp_path), "--no-plot", "--quiet"]) == 0
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    assert len(rounds) == 2 and rounds.aggregated.sum() > 0
    events = pd.read_parquet(tmp_path / "events.parquet")
    if "topology" in path.read_text():
        assert (events.kind == "backhaul").any()


def test_handover_example_hands_over_during_an_upload_into_a_busy_cell(tmp_path):
    path = ROOT / "traces" / "examples" / "handover_busy_cell.toml"
    assert main(["run", str(path), "--out", str(tmp_path), "--no-plot", "--quiet"]) == 0
    ev = pd.read_parquet(tmp_path / "events.parquet")
    (ho,) = ev[(ev.kind == "handover") & (ev.client == 0)].itertuples()
    up = ev[(ev.kind == "upload") & (ev.client == 0) & (ev["round"] == ho.round)].iloc[0]
    assert (ho.cell_from, ho.cell) == ("A", "B") and up.t_start_s < ho.t_start_s and up.t_end_s > ho.t_end_s
    others_in_b = ev[(ev.kind == "upload") & (ev.client != 0) & (ev.cell == "B")]
    assert ((others_in_b.t_start_s < ho.t_end_s) & (others_in_b.t_end_s > ho.t_end_s)).sum() >= 2  # B is busy
    links = pd.read_parquet(tmp_path / "links.parquet")
    car_on_b = links[(links.client == 0) & (links.kind == "upload") & (links.cell == "B") & (links["round"] == ho.round)]
    assert car_on_b.t_s.min() == ho.t_end_s and (car_on_b.sharing >= 3).any()  # it shares B's band
