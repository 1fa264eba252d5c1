"""Scaling with the population (issue 10): devices made on first use, per-device draws keyed by device,
a lazy selection context and fl.final_evaluation.  Uses the StubLearner (tests/conftest.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import StubLearner

from pwffsim.net.channel import fdma_rate_bps
from pwffsim.net.links import CellSite, LinkBudget
from pwffsim.net.pathloss import make_path_loss_model
from pwffsim.scenario import load_scenario
from pwffsim.sim.engine import Simulation
from pwffsim.sim.selection import SelectionContext, make_selector
from pwffsim.sim.world import STREAM_SHADOWING, stream

THREE_CELLS = [f"cells=[{{id='A', x_m=0.0, y_m=0.0}}, {{id='B', x_m=400.0, y_m=0.0}}, {{id='C', x_m=200.0, y_m=350.0}}]"]


def scenario(*sets: str, devices: int = 12, clients: int = 4, rounds: int = 3):
    return load_scenario(None, [f"devices.count={devices}", f"fl.clients_per_round={clients}", f"fl.rounds={rounds}",
                                "pwff.scheme='fedavg-all'", "fl.eval_batches=0", *sets], seed=3)


def budget(n: int, model: str = "UMa", correlated: bool = False) -> LinkBudget:
    cells = [CellSite(0.0, 0.0, None, 3.5e9, 46.0), CellSite(300.0, 50.0, None, 3.5e9, 46.0)]
    return LinkBudget(make_path_loss_model(model), cells, lambda *keys: stream(7, STREAM_SHADOWING, *keys), n,
                      correlated=correlated)


def test_link_gains_do_not_depend_on_query_order():
    n = 40
    xy = np.random.default_rng(0).uniform(-500, 500, size=(n, 2))
    forward, backward = budget(n), budget(n)
    a = {(k, j): forward.gain_db(k, j, xy[k]) for k in range(n) for j in (0, 1)}
    b = {(k, j): backward.gain_db(k, j, xy[k]) for k in reversed(range(n)) for j in (1, 0)}
    assert a == b
    # ... and are the device's own stream drawn as before (one uniform, one normal per cell, in that order)
    for k in (0, 17, 39):
        rng = stream(7, STREAM_SHADOWING, k)
        u, z = rng.uniform(size=2), rng.standard_normal(size=2)
        assert np.array_equal(backward.link_draws(k)[0], u) and np.array_equal(backward.link_draws(k)[1], z)
    with pytest.raises(IndexError):
        forward.link_draws(n)


def test_devices_are_made_on_first_use_only():
    sim = Simulation(scenario(devices=1000, clients=5), learner=StubLearner(4000, 1e9))
    assert len(sim.world.devices.made()) == 0
    sim.run()
    made = {k for k, _ in sim.world.devices.made()}
    assert made == {row["client"] for row in sim.clients}  # only the selected ones
    assert len(sim.world.link._draws) <= len(made)
    assert sim.summary()["devices_alive"] == 1000


def _traces(sim):
    return sim.events, sim.rounds, sim.clients, sim.final, sim.summary()


@pytest.mark.parametrize("sets", [[], THREE_CELLS + ["channel.path_loss='UMa'"],
                                  THREE_CELLS + ["mobility.model='random-waypoint'", "channel.interference=true"]])
def test_first_use_order_does_not_change_the_run(sets):
    """Devices (and their link draws) made in the run's own order, or all of them first in reverse
    order: the same traces."""
    plain = Simulation(scenario(*sets), learner=StubLearner(4000, 1e9))
    plain.run()
    touched = Simulation(scenario(*sets), learner=StubLearner(4000, 1e9))
    for k in reversed(range(len(touched.world.devices))):
        touched.world.devices[k]
        for j in reversed(range(len(touched.cells))):
            touched.world.link.link_draws(k)
            touched.world.large_scale_gain(k, j, 0.0)
    touched.run()
    assert repr(_traces(plain)) == repr(_traces(touched))  # repr: NaN objectives compare equal


def _eager_context(loop, r, candidates):
    """The selection context as the round loop built it before it was lazy (every field for every
    candidate)."""
    now, devices, world = loop.env.now, loop.world.devices, loop.world
    rate = {}
    for k in candidates:
        dev = devices[k]
        band = world.cells[dev.cell].uplink
        b = band.bandwidth_hz / max(1, loop.fl.clients_per_round)
        rate[k] = fdma_rate_bps(b, dev.profile.tx_power_w, world.large_scale_gain(k, dev.cell, now),
                                band.noise_density_w_per_hz)
    st = loop.state
    return SelectionContext(
        round=r, t_s=now, expected_rate_bps=rate,
        battery_j={k: devices[k].battery.level_j for k in candidates},
        battery_capacity_j={k: devices[k].battery.capacity_j for k in candidates},
        num_samples={k: int(loop.learner.num_samples(k)) for k in candidates},
        last_loss={k: st.last_loss[k] for k in candidates if k in st.last_loss},
        last_duration_s={k: st.last_duration_s[k] for k in candidates if k in st.last_duration_s})


@pytest.mark.parametrize("name,kw", [("channel", {}), ("battery", {"threshold_fraction": 0.5}),
                                     ("oort", {"epsilon": 0.3}), ("uniform", {})])
def test_lazy_context_selects_as_the_eager_one(name, kw):
    sim = Simulation(scenario(*THREE_CELLS, "channel.path_loss='UMa'", devices=60), learner=StubLearner(4000, 1e9))
    loop, _ = sim._round_loop()
    rng = np.random.default_rng(5)
    for k in range(0, 60, 3):  # some history: batteries, losses, durations
        dev = sim.world.devices[k]
        dev.battery.draw(dev.battery.capacity_j * rng.uniform(0, 0.9))
        sim.state.last_loss[k] = float(rng.uniform(0.5, 3))
        if k % 2:
            sim.state.last_duration_s[k] = float(rng.uniform(0.1, 2))
    cands = loop.candidates(busy=[1, 2, 59])
    assert 1 not in cands and 0 in cands and len(cands) == 57
    sel = make_selector(name, **kw)
    for k in (1, 5, 20):
        lazy = sel.select(np.random.default_rng(11), cands, k, loop.selection_context(0, cands))
        eager = sel.select(np.random.default_rng(11), list(reversed(cands)), k, _eager_context(loop, 0, cands))
        assert lazy == eager
    ctx = loop.selection_context(0, cands)
    assert dict(ctx.last_loss) == _eager_context(loop, 0, cands).last_loss
    assert 1 not in ctx.battery_j and ctx.battery_j.get(1) is None


def test_uniform_selection_computes_no_rate():
    sim = Simulation(scenario(devices=500, clients=5, rounds=1), learner=StubLearner(4000, 1e9))
    loop, _ = sim._round_loop()
    ctx = loop.selection_context(0, loop.candidates())
    make_selector("uniform").select(np.random.default_rng(0), loop.candidates(), 5, ctx)
    assert ctx.expected_rate_bps._cache == {} and sim.world.devices.made() == []


def test_final_evaluation_all_trained_none():
    class Metrics(StubLearner):
        def evaluate_metrics(self, state, client, pref_help, pref_safe):
            return dict(eval_loss=float(client), eval_loss_others=2.0 * client, reward_help=0.0, reward_safe=0.0,
                        objective=float(client) + 1.0)

    runs = {}
    for which in ("all", "trained", "none"):
        sim = Simulation(scenario(f"fl.final_evaluation='{which}'", devices=30, clients=3, rounds=2),
                         learner=Metrics(4000, 1e9))
        runs[which] = (sim, sim.run())
    all_rows = runs["all"][0].final
    assert [f["client"] for f in all_rows] == list(range(30))
    trained = sorted({c["client"] for c in runs["all"][0].clients if not math.isnan(c["train_loss"])})
    assert 0 < len(trained) < 30
    rows = runs["trained"][0].final
    assert [f["client"] for f in rows] == trained
    assert repr(rows) == repr([f for f in all_rows if f["client"] in trained])
    assert all(f["trained_rounds"] >= 1 for f in rows)
    assert runs["trained"][1]["final_eval_loss_mean"] == pytest.approx(np.mean(trained))
    assert runs["all"][1]["final_eval_loss_mean"] == pytest.approx(np.mean(range(30)))
    assert runs["none"][0].final == [] and runs["none"][1]["final_objective_mean"] is None
    for which in ("trained", "none"):  # only the final evaluation differs
        assert repr(runs[which][0].clients) == repr(runs["all"][0].clients)
