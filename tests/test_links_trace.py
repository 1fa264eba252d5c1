"""The links trace lets a reader check every transfer: its duration is recomputed here from the links
rows alone (bandwidth share and SINR -> Shannon rate, integrated over the rows' instants), and the
rows' parts agree with each other and with the path-loss formula."""
import math

import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner


def _run(**channel):
    sc = scenario_from_dict({
        "devices": {"count": 10, "placement": "disc", "radius_m": 400.0},
        "channel": {"fading": "rayleigh", "coherence_time_s": 0.005, **channel},
        "fl": {"rounds": 2, "clients_per_round": 5},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = Simulation(sc, learner=StubLearner(200_000, flops=1e9))
    sim.run()
    return sim


def test_every_transfer_duration_from_the_links_rows_alone():
    sim = _run()
    transfers = [e for e in sim.events if e["kind"] in ("download", "upload") and e["status"] == "ok"]
    assert len(transfers) == 20
    rechecked = 0
    for e in transfers:
        rows = sorted((r for r in sim.links if (r["round"], r["client"], r["kind"]) == (e["round"], e["client"], e["kind"])
                       and e["t_start_s"] <= r["t_s"] <= e["t_end_s"]), key=lambda r: r["t_s"])
        assert rows and rows[0]["t_s"] == e["t_start_s"]
        bits_left, t = 8.0 * e["bytes"], None
        for row, nxt in zip(rows, rows[1:] + [None]):
            rate = row["bandwidth_hz"] * math.log2(1 + 10 ** (row["sinr_db"] / 10))
            assert rate == pytest.approx(row["rate_bps"], rel=1e-9)
            if nxt is None or bits_left <= rate * (nxt["t_s"] - row["t_s"]):
                t = row["t_s"] + bits_left / rate
                break
            bits_left -= rate * (nxt["t_s"] - row["t_s"])
        assert t == pytest.approx(e["t_end_s"], rel=1e-9)
        rechecked += len(rows) > 1
    assert rechecked >= 5  # several transfers crossed fading blocks or shared the band as others came and went


def test_link_parts_add_up():
    sim = _run(shadowing_sigma_db=6.0)
    ups = [r for r in sim.links if r["kind"] == "upload"]
    assert {r["sharing"] for r in ups} >= {1, 2}
    for r in ups:
        assert r["path_loss_db"] == pytest.approx(128.1 + 37.6 * math.log10(r["distance_m"] / 1000), abs=1e-9)
        assert r["bandwidth_hz"] == pytest.approx(20e6 / r["sharing"], rel=1e-12)
        assert r["los"] == 1 and r["interference_dbm_hz"] == -math.inf
        # p g / (N0 b) with g from the path loss and shadowing, p = 23 dBm (phone) or 20 dBm (low-end)
        p_dbm = r["snr_mean_db"] + r["path_loss_db"] + r["shadowing_db"] - 174.0 + 10 * math.log10(r["bandwidth_hz"])
        assert min(abs(p_dbm - 23.0), abs(p_dbm - 20.0)) < 1e-9
        assert r["sinr_db"] == pytest.approx(r["snr_mean_db"] + r["fading_db"], abs=1e-9)  # no interference


def test_clients_rows_name_the_device_profile():
    sim = _run()
    names = {p.name for p in sim.sc.devices.profiles}
    assert {c["profile"] for c in sim.clients} <= names
    assert all(c["profile"] == sim.devices[c["client"]].profile.name for c in sim.clients)


def test_the_links_table_can_be_turned_off(tmp_path):
    from pwffsim.cli import main

    assert main(["run", "--out", str(tmp_path), "--no-plot", "--quiet", "--set", "trace.links=false",
                 "--set", "fl.rounds=1"]) == 0
    assert (tmp_path / "links.csv").read_text().count("\n") == 1  # the header only
    assert (tmp_path / "events.csv").read_text().count("\n") > 1
