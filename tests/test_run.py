"""Whole runs with real LoRA training: learning, determinism, executors, and the CLI end to end."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pwffsim.scenario import load_scenario
from pwffsim.sim.engine import Simulation
from pwffsim.trace import SCHEMAS

SMALL = ["fl.rounds=3", "devices.count=6", "fl.clients_per_round=3"]


def run_to(tmp_path: Path, name: str, overrides=(), seed=None):
    sc = load_scenario(None, overrides=list(overrides), seed=seed)
    out = tmp_path / name
    Simulation(sc, out_dir=str(out)).run()
    return out


def tables_bytes(d: Path):
    return {t: ((d / f"{t}.csv").read_bytes(), (d / f"{t}.parquet").read_bytes()) for t in ("events", "rounds")}


def test_training_loss_falls_on_default_scenario(tmp_path):
    out = run_to(tmp_path, "default")
    rounds = pd.read_parquet(out / "rounds.parquet")
    loss = rounds["train_loss"].to_numpy()
    assert len(loss) == 10 and not any(math.isnan(x) for x in loss)
    assert loss[-1] < 0.5 * loss[0]
    assert loss[-3:].mean() < loss[:3].mean()
    clients = pd.read_parquet(out / "clients.parquet")
    first, last = clients[clients["round"] == 0]["eval_loss"].mean(), clients[clients["round"] == 9]["eval_loss"].mean()
    assert last < first


def test_same_seed_identical_tables_other_seed_different(tmp_path):
    a = tables_bytes(run_to(tmp_path, "a", SMALL, seed=1))
    b = tables_bytes(run_to(tmp_path, "b", SMALL, seed=1))
    c = tables_bytes(run_to(tmp_path, "c", SMALL, seed=2))
    assert a == b
    assert a["events"][0] != c["events"][0] and a["rounds"][0] != c["rounds"][0]


def test_inprocess_and_process_pool_give_identical_tables(tmp_path):
    a = tables_bytes(run_to(tmp_path, "inproc", SMALL + ["execution.executor='inprocess'"]))
    b = tables_bytes(run_to(tmp_path, "pool", SMALL + ["execution.executor='process'", "execution.workers=2"]))
    assert a == b
    clients_a = pd.read_csv(tmp_path / "inproc" / "clients.csv")
    clients_b = pd.read_csv(tmp_path / "pool" / "clients.csv")
    pd.testing.assert_frame_equal(clients_a, clients_b)


def test_aggregated_global_equals_weighted_mean_of_real_updates(tmp_path):
    """Record every real training result; the new global LoRA tensors are their sample-weighted mean."""
    import torch

    from pwffsim.sim.executor import InProcessExecutor

    sc = load_scenario(None, overrides=["fl.rounds=1", "devices.count=5", "fl.clients_per_round=4"])
    sim = Simulation(sc)
    seen = []
    orig_run = sim.learner.run

    def spy(job):
        res = orig_run(job)
        seen.append(res)
        return res

    sim.learner.run = spy
    sim.executor = InProcessExecutor(sim.learner)
    sim.run()
    assert len(seen) == 4
    total = sum(r.num_samples for r in seen)
    for key, got in sim.state.global_state.items():
        expected = torch.zeros_like(got, dtype=torch.float64)
        for r in seen:
            expected += r.state[key].double() * (r.num_samples / total)
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pwffsim.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_cli_run_default_writes_every_table_with_documented_columns(tmp_path):
    t0 = time.perf_counter()
    p = _cli("run", "--out", str(tmp_path / "run"))
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    assert elapsed < 120  # generous on a loaded CI machine; the README states the typical time
    out = tmp_path / "run"
    for name, cols in SCHEMAS.items():
        want = [c for c, _, _ in cols]
        assert list(pd.read_parquet(out / f"{name}.parquet").columns) == want
        assert list(pd.read_csv(out / f"{name}.csv").columns) == want
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 10
    resolved = load_scenario(out / "scenario.resolved.toml")
    assert resolved == load_scenario(None)
    for png in ("round_delay", "energy_per_device", "battery", "loss"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 5000
    assert "train loss" in p.stdout
    p2 = _cli("plot", str(out), "--out", str(tmp_path / "p2"))
    assert p2.returncode == 0 and len(list((tmp_path / "p2").glob("*.png"))) == 4


BROKEN = {
    "unknown_key.toml": ("[fl]\nrounds = 3\nroundz = 4\n", "fl.roundz"),
    "wrong_type.toml": ("[fl]\nrounds = 'many'\n", "fl.rounds"),
    "negative_bw.toml": ("[[cells]]\nuplink_bandwidth_hz = -5\n", "cells.0.uplink_bandwidth_hz"),
    "bad_enum.toml": ("[channel]\nfading = 'nakagami'\n", "channel.fading"),
    "syntax.toml": ("[fl\nrounds = 3\n", "not valid TOML"),
    "explicit_count.toml": ("[devices]\ncount = 3\nplacement = 'explicit'\npositions_m = [[1.0, 2.0]]\n", "devices"),
    "too_many_selected.toml": ("[devices]\ncount = 2\n[fl]\nclients_per_round = 5\n", "clients_per_round"),
    "deadline_missing.toml": ("[fl]\npolicy = 'deadline'\n", "fl"),
    "nan_value.toml": ("[channel]\nshadowing_sigma_db = nan\n", "channel.shadowing_sigma_db"),
}


@pytest.mark.parametrize("fname", sorted(BROKEN))
def test_validate_broken_file_exits_2_naming_the_field(tmp_path, fname):
    text, field = BROKEN[fname]
    f = tmp_path / fname
    f.write_text(text)
    p = _cli("validate", str(f))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(f) in lines[0] and field in lines[0]


def test_validate_good_file_and_missing_file(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text("seed = 4\n[fl]\nrounds = 2\n")
    assert _cli("validate", str(f)).returncode == 0
    p = _cli("validate", str(tmp_path / "nope.toml"))
    assert p.returncode == 2 and "file not found" in p.stderr


def test_run_with_bad_override_or_model_path_exits_2_and_keeps_existing_files(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    p = _cli("run", "--out", str(out), "--set", "fl.rounds=zero")
    assert p.returncode == 2 and "fl.rounds" in p.stderr
    p = _cli("run", "--out", str(out), "--set", "model.source='/no/such/ckpt'")
    assert p.returncode == 2 and "/no/such/ckpt" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert (out / "precious.txt").read_text() == "x"
