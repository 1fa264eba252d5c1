"""Aggregation policies and client selection on small hand-checkable cases (StubLearner: known sizes,
known FLOPs, fading and shadowing off), common random numbers, availability, and `pwffsim compare`."""
import math

import numpy as np
import pandas as pd
import pytest

from pwffsim.cli import main
from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation

from conftest import StubLearner

PAYLOAD, FLOPS = 400_000, 2e10


def three_clients(speeds_hz=(4e9, 2e9, 1e9), **fl):
    """Three devices at the same distance; only their CPUs differ, so their arrival order is 0, 1, 2."""
    profiles = [{"name": f"p{i}", "share": 1.0, "cpu_hz": f, "flops_per_cycle": 1.0, "battery_j": 1e6}
                for i, f in enumerate(speeds_hz)]
    return scenario_from_dict({
        "devices": {"count": 3, "placement": "explicit", "positions_m": [[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]],
                    "profiles": profiles, "profile_of_device": ["p0", "p1", "p2"]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 1, "aggregation_time_s": 0.0, **fl},
        "pwff": {"scheme": "fedavg-all"},
    })


def run(sc, samples=None):
    sim = Simulation(sc, learner=StubLearner(PAYLOAD, FLOPS, samples=samples))
    sim.run()
    return sim


def compute_s(sim, k):
    return FLOPS / sim.devices[k].profile.flops_per_s


def uploads(sim):
    return {e["client"]: e for e in sim.events if e["kind"] == "upload"}


def test_sync_waits_for_every_client():
    sim = run(three_clients(clients_per_round=3))
    ups = uploads(sim)
    assert sim.rounds[0]["aggregated"] == 3
    assert sim.rounds[0]["t_end_s"] == pytest.approx(max(e["t_end_s"] for e in ups.values()), rel=1e-12)
    # profile i has CPU speeds 4, 2, 1 GHz (1 FLOP/cycle) in profile order; the slowest computes 4x longer
    durations = [compute_s(sim, k) for k in range(3)]
    assert durations == pytest.approx([FLOPS / 4e9, FLOPS / 2e9, FLOPS / 1e9])
    cps = {e["client"]: e for e in sim.events if e["kind"] == "compute"}
    assert [cps[k]["t_end_s"] - cps[k]["t_start_s"] for k in range(3)] == pytest.approx(durations, rel=1e-12)


def test_overselection_aggregates_the_first_k_and_stops_the_rest():
    # K = 2, x = 0.5: select ceil(2 x 1.5) = 3; the two fastest arrive first
    sim = run(three_clients(clients_per_round=2, policy="overselect", overcommit=0.5), samples={0: 10, 1: 30, 2: 60})
    assert sim.rounds[0]["selected"] == 3 and sim.rounds[0]["aggregated"] == 2 and sim.rounds[0]["late"] == 1
    order = sorted(range(3), key=lambda k: compute_s(sim, k))
    fast, slow = order[:2], order[2]
    ups = uploads(sim)
    t_second = max(ups[k]["t_end_s"] for k in fast)
    assert sim.rounds[0]["t_end_s"] == pytest.approx(t_second, rel=1e-12)
    # the straggler was stopped when the second update arrived
    stopped = [e for e in sim.events if e["client"] == slow and e["status"] == "late"]
    assert len(stopped) == 1 and stopped[0]["t_end_s"] == pytest.approx(t_second, rel=1e-12)
    samples = {0: 10, 1: 30, 2: 60}
    expected = sum(samples[k] * (k + 1) for k in fast) / sum(samples[k] for k in fast)
    assert float(sim.state.global_state["w"][0]) == pytest.approx(expected, rel=1e-6)


def test_deadline_between_arrivals():
    probe = run(three_clients(clients_per_round=3))
    ends = sorted(e["t_end_s"] for e in uploads(probe).values())
    sim = run(three_clients(clients_per_round=3, policy="deadline", deadline_s=0.5 * (ends[1] + ends[2])))
    assert (sim.rounds[0]["aggregated"], sim.rounds[0]["late"]) == (2, 1)
    assert sim.rounds[0]["t_end_s"] == pytest.approx(0.5 * (ends[1] + ends[2]), rel=1e-12)


def test_channel_aware_selection_picks_the_strongest_links():
    positions = [[50.0, 0.0], [240.0, 0.0], [30.0, 0.0], [200.0, 0.0], [120.0, 0.0]]
    sc = scenario_from_dict({
        "devices": {"count": 5, "placement": "explicit", "positions_m": positions},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 1, "clients_per_round": 2, "selection": "channel"},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = run(sc)
    assert sorted(c["client"] for c in sim.clients) == [0, 2]  # the two closest


def test_common_random_numbers_across_policies():
    base = {
        "seed": 11,
        "devices": {"count": 6},
        "channel": {"fading": "rayleigh", "coherence_time_s": 0.01},
        "mobility": {"model": "random-waypoint"},
        "pwff": {"scheme": "fedavg-all"},
    }
    a = Simulation(scenario_from_dict({**base, "fl": {"rounds": 1, "clients_per_round": 3}}), learner=StubLearner())
    b = Simulation(scenario_from_dict({**base, "fl": {"rounds": 1, "clients_per_round": 4, "policy": "overselect",
                                                      "selection": "oort"}}), learner=StubLearner())
    b.run()  # b consumes its streams in another order; a is queried fresh afterwards
    ts = np.linspace(0.0, 30.0, 997)
    for k in range(6):
        for cell in range(len(a.cells)):
            for d in ("ul", "dl"):
                ga = [a.world.fading(k, cell, d).gain(t) for t in ts[::-1]]
                gb = [b.world.fading(k, cell, d).gain(t) for t in ts[::-1]]
                assert ga == gb
            assert [a.world.large_scale_gain(k, cell, t) for t in ts] == [b.world.large_scale_gain(k, cell, t) for t in ts]
        assert all(np.array_equal(a.world.position(k, t), b.world.position(k, t)) for t in ts)


def test_device_going_offline_mid_round_stops_at_that_time(tmp_path):
    probe = run(three_clients(clients_per_round=3))
    t_dl_end = max(e["t_end_s"] for e in probe.events if e["kind"] == "download")
    t_off = t_dl_end + 0.5 * min(compute_s(probe, k) for k in range(3))
    avail = tmp_path / "avail.csv"
    avail.write_text(f"client,start_s,end_s\n1,0,{t_off!r}\n1,1000,2000\n")
    sc = three_clients(clients_per_round=3, availability=str(avail))
    sim = run(sc)
    st = {c["client"]: c["status"] for c in sim.clients}
    assert st == {0: "ok", 1: "offline", 2: "ok"}
    (off,) = [e for e in sim.events if e["kind"] == "offline"]
    assert off["client"] == 1 and off["t_start_s"] == pytest.approx(t_off, rel=1e-12)
    (cp,) = [e for e in sim.events if e["client"] == 1 and e["kind"] == "compute"]
    assert cp["status"] == "offline" and cp["t_end_s"] == pytest.approx(t_off, rel=1e-12)


def test_offline_devices_are_not_selected(tmp_path):
    avail = tmp_path / "avail.csv"
    avail.write_text("client,start_s,end_s\n0,100,200\n1,100,200\n")
    sim = run(three_clients(clients_per_round=3, availability=str(avail)))
    assert [c["client"] for c in sim.clients] == [2]


def test_compare_command_writes_table_and_plots(tmp_path):
    out = tmp_path / "cmp"
    rc = main(["compare", "--policy", "sync", "--policy", "overselect:0.5@channel", "--seeds", "0-1", "--out", str(out),
               "--set", "fl.rounds=2", "--set", "devices.count=5", "--set", "fl.clients_per_round=2",
               "--set", "pwff.align_steps=0", "--set", "pwff.metric_prompts=1", "--quiet"])
    assert rc == 0
    table = pd.read_csv(out / "compare.csv")
    assert len(table) == 4 and set(table.policy) == {"sync", "overselect:0.5@channel"}
    assert table.time_to_target_s.notna().all()
    summary = pd.read_csv(out / "summary.csv")
    assert {"time_to_target_s_mean", "time_to_target_s_ci95", "final_objective_mean"} <= set(summary.columns)
    for png in ("loss_vs_time", "round_delay_cdf", "energy_per_device"):
        assert (out / f"{png}.png").stat().st_size > 5000
    assert main(["compare", "--policy", "fedbogus", "--out", str(out)]) == 2


# ---------------------------------------------------------------- asynchronous policies
# Two devices training concurrently: device 0 computes for 5 s, device 1 for 12 s (transfers take
# milliseconds), so updates arrive at about 5, 10, 12, 15 s.  The stub's update is start + (k + 1);
# its sample count is 10 + k.


def two_async(policy, rounds, batteries_j=(1e6, 1e6), **fl):
    profiles = [{"name": "fast", "cpu_hz": 4e9, "flops_per_cycle": 1.0, "battery_j": batteries_j[0]},
                {"name": "slow", "cpu_hz": 2e10 / 12.0, "flops_per_cycle": 1.0, "battery_j": batteries_j[1]}]
    sc = scenario_from_dict({
        "devices": {"count": 2, "placement": "explicit", "positions_m": [[100.0, 0.0], [-100.0, 0.0]],
                    "profiles": profiles, "profile_of_device": ["fast", "slow"]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": rounds, "clients_per_round": 2, "aggregation_time_s": 0.0, "policy": policy, **fl},
        "pwff": {"scheme": "fedavg-all"},
    })
    return run(sc)


def g(sim):
    return float(sim.state.global_state["w"][0])


def staleness(sim):
    return [(c["round"], c["client"], c["staleness"]) for c in sim.clients if c["status"] == "ok"]


def test_fedasync_mixes_each_arrival_with_its_staleness_weight():
    sim = two_async("fedasync", rounds=3, async_alpha=0.6, async_staleness_exponent=0.5)
    g1 = 0.6 * 1.0                                   # device 0 from version 0, tau 0
    g2 = 0.4 * g1 + 0.6 * (g1 + 1.0)                 # device 0 again, from version 1, tau 0
    a = 0.6 * (1 + 2) ** -0.5                        # device 1 from version 0, aggregated at version 2
    g3 = (1 - a) * g2 + a * 2.0
    assert g(sim) == pytest.approx(g3, rel=1e-6)
    assert staleness(sim) == [(0, 0, 0), (1, 0, 0), (2, 1, 2)]
    ends = [r["t_end_s"] for r in sim.rounds]
    assert ends == pytest.approx([5.0, 10.0, 12.0], abs=0.05)


def test_fedbuff_aggregates_every_m_arrivals_with_sqrt_staleness():
    sim = two_async("fedbuff", rounds=2, buffer_size=2, server_lr=1.0)
    g1 = 0.0 + (10 * 1.0 + 10 * 1.0) / 20            # two updates of device 0, both from version 0
    w = 1 / math.sqrt(2)                              # device 1: from version 0, aggregated at version 1
    g2 = g1 + (11 * w * 2.0 + 10 * 1.0 * 1.0) / 21    # device 1 (delta 2) and device 0 (from v1, delta 1)
    assert g(sim) == pytest.approx(g2, rel=1e-6)
    assert sorted(staleness(sim)) == [(0, 0, 0), (0, 0, 0), (1, 0, 0), (1, 1, 1)]
    assert [r["aggregated"] for r in sim.rounds] == [2, 2]


def test_semisync_aggregates_whatever_arrived_each_period():
    sim = two_async("semisync", rounds=2, period_s=7.0, server_lr=1.0)
    assert [r["t_end_s"] for r in sim.rounds] == pytest.approx([7.0, 14.0], rel=1e-9)
    g1 = 0.0 + 10 * 1.0 / 10                          # device 0's first update (arrived at 5 s)
    w = 1 / math.sqrt(2)
    g2 = g1 + (10 * w * 1.0 + 11 * w * 2.0) / 21      # device 0 (10 s) and device 1 (12 s), both from v0
    assert g(sim) == pytest.approx(g2, rel=1e-6)
    assert [r["aggregated"] for r in sim.rounds] == [1, 2]


def test_hierarchical_edges_every_round_cloud_every_e_rounds():
    from pathlib import Path

    from pwffsim.net.topology import load_topology

    topo_path = Path(__file__).resolve().parents[1] / "topologies" / "hierarchical.toml"
    sc = scenario_from_dict({
        "topology": str(topo_path),
        "devices": {"count": 4, "placement": "explicit",
                    "positions_m": [[-140.0, -150.0], [160.0, -150.0], [-140.0, 150.0], [160.0, 150.0]]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 2, "clients_per_round": 4, "aggregation_time_s": 0.0, "policy": "hierarchical",
               "cloud_every": 2},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = run(sc)
    n = {k: 10 + k for k in range(4)}
    # round 0: each edge averages its two cells' updates (start 0 + (k + 1))
    e0 = (n[0] * 1 + n[1] * 2) / (n[0] + n[1])
    e1 = (n[2] * 3 + n[3] * 4) / (n[2] + n[3])
    # round 1: clients start from their edge's model; edges average again; then the cloud round
    e0b = e0 + e0
    e1b = e1 + e1
    s0, s1 = 2 * (n[0] + n[1]), 2 * (n[2] + n[3])
    cloud = (s0 * e0b + s1 * e1b) / (s0 + s1)
    assert g(sim) == pytest.approx(cloud, rel=1e-6)
    assert float(sim.state.edge_state["edge0"]["w"][0]) == pytest.approx(cloud, rel=1e-6)
    topo = load_topology(topo_path)
    cloud_legs = [e for e in sim.events if e["kind"] == "backhaul" and e["client"] == -1]
    assert len(cloud_legs) == 4 and all(e["round"] == 1 for e in cloud_legs)
    nbytes = PAYLOAD
    for e in cloud_legs:
        assert e["t_end_s"] - e["t_start_s"] == pytest.approx(topo.transfer_time_s(e["cell_from"], e["cell"], nbytes))
    # clients' backhaul legs stop at their edge server, never the cloud
    client_legs = [e for e in sim.events if e["kind"] == "backhaul" and e["client"] >= 0]
    assert client_legs and all("cloud" not in (e["cell"], e["cell_from"]) for e in client_legs)
    # the cloud round adds the slowest up and down legs to round 1
    r1 = sim.rounds[1]
    last_up = max(e["t_end_s"] for e in sim.events if e["round"] == 1 and e["kind"] == "backhaul" and e["client"] >= 0)
    assert r1["t_end_s"] == pytest.approx(last_up + 2 * topo.transfer_time_s("edge0", "cloud", nbytes), rel=1e-9)


def test_semisync_period_shorter_than_aggregation_time_skips_missed_periods():
    sim = two_async("semisync", rounds=3, period_s=0.001, aggregation_time_s=0.01)
    ends = [r["t_end_s"] for r in sim.rounds]
    assert len(ends) == 3 and all(b > a for a, b in zip(ends, ends[1:]))


def test_fedbuff_with_an_unfillable_buffer_flushes_what_it_has_and_ends():
    # Each battery holds 2.5 local updates (compute energy kappa (FLOPs / flops_per_cycle) f^2; the
    # radio's few mJ per round fit in the half): each device arrives twice, then dies computing its
    # third update.  Four arrivals can never fill a buffer of 50, so when no device is left the
    # buffer is flushed: one aggregation of the 4 updates, then the run stops for want of devices.
    e_c = [1e-28 * FLOPS * f ** 2 for f in (4e9, 2e10 / 12.0)]
    sim = two_async("fedbuff", rounds=3, buffer_size=50, server_lr=1.0, batteries_j=[2.5 * e for e in e_c])
    drops = [e for e in sim.events if e["kind"] == "dropout"]
    assert sorted(e["client"] for e in drops) == [0, 1]
    (r,) = sim.rounds
    assert (r["aggregated"], r["selected"]) == (4, 6)  # 2 arrivals per device, and the 2 dropped rounds
    assert r["t_end_s"] == pytest.approx(max(e["t_start_s"] for e in drops), rel=1e-12)  # aggregation takes 0 s
    assert "no device with battery left" in sim.state.stopped_reason
    # FedBuff step: every update started from the initial global (0) at staleness 0, and the stub's
    # update of client k is start + (k + 1) with n_k = 10 + k samples:
    #   g = sum_i n_i (k_i + 1) / sum_i n_i over the 4 arrivals (two of each device)
    assert g(sim) == pytest.approx((2 * 10 * 1 + 2 * 11 * 2) / (2 * 10 + 2 * 11), rel=1e-6)
    assert sum(r["energy_j"] for r in sim.rounds) == pytest.approx(sum(c["energy_j"] for c in sim.clients), rel=1e-12)


def test_everyone_offline_at_first_then_online_delays_the_first_round(tmp_path):
    avail = tmp_path / "avail.csv"
    avail.write_text("client,start_s,end_s\n0,100,1000\n1,100,1000\n2,150,1000\n")
    sim = run(three_clients(clients_per_round=2, availability=str(avail)))
    assert sim.rounds and sim.rounds[0]["t_start_s"] == pytest.approx(100.0)
    assert {c["client"] for c in sim.clients} <= {0, 1}


def test_hierarchical_without_edge_servers_is_a_one_line_error(tmp_path):
    from pathlib import Path

    topo = Path(__file__).resolve().parents[1] / "topologies" / "hex7_uma.toml"
    f = tmp_path / "h.toml"
    f.write_text(f'topology = "{topo}"\n[fl]\npolicy = "hierarchical"\nrounds = 1\n')
    assert main(["run", str(f), "--out", str(tmp_path / "o"), "--no-plot", "--quiet"]) == 2
