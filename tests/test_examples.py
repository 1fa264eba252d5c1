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
