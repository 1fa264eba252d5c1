"""FedAvgM (server momentum), the policy added through the registry alone: hand-computed global parts.

StubLearner: client k's update is ``start + (k + 1)``, its weight ``10 + k`` samples.  Three clients,
every round synchronous, so each round's FedAvg mean is ``current + (10*1 + 11*2 + 12*3) / 33 =
current + 68/33``, and the pseudo-gradient is always ``g = -68/33``.
"""
from pathlib import Path

import pytest

from pwffsim.scenario import scenario_from_dict
from pwffsim.sim.engine import Simulation
from pwffsim.sim.policies import POLICIES, policy_class

from conftest import StubLearner

ROOT = Path(__file__).resolve().parents[1]
G = -68 / 33  # pseudo-gradient current - FedAvg mean, every round


def run(rounds, **fl):
    sc = scenario_from_dict({
        "devices": {"count": 3, "placement": "explicit", "positions_m": [[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": rounds, "clients_per_round": 3, "policy": "fedavgm", **fl},
        "pwff": {"scheme": "fedavg-all"},
    })
    sim = Simulation(sc, learner=StubLearner(4_000, 1e9))
    sim.run()
    return float(sim.state.global_state["w"][0])


def test_momentum_accumulates_the_pseudo_gradient():
    # v1 = g, w1 = -g; v2 = 0.5 g + g, w2 = w1 - v2 = -2.5 g  (FedAvg would give -2 g)
    assert run(1, server_momentum=0.5) == pytest.approx(-G, rel=1e-6)
    assert run(2, server_momentum=0.5) == pytest.approx(-2.5 * G, rel=1e-6)
    assert run(3, server_momentum=0.5) == pytest.approx(-(1 + 1.5 + 1.75) * G, rel=1e-6)


def test_server_step_scales_the_velocity():
    # eta = 0.5: w1 = -0.5 g; v2 = 1.5 g, w2 = w1 - 0.75 g = -1.25 g
    assert run(2, server_momentum=0.5, server_lr=0.5) == pytest.approx(-1.25 * G, rel=1e-6)


def test_no_momentum_unit_step_is_fedavg():
    assert run(3, server_momentum=0.0) == pytest.approx(-3 * G, rel=1e-6)


def test_registry_names_the_policy_and_its_parameters():
    cls = policy_class("fedavgm")
    assert POLICIES["fedavgm"] is cls and cls.parameters == ("server_momentum", "server_lr")
    with pytest.raises(ValueError, match="server_momentum"):
        cls(server_momentum=1.0)


def test_every_registered_policy_is_a_scenario_choice_and_a_compare_spec():
    from pwffsim.compare import policy_overrides
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.builders import build_policy

    for name, cls in POLICIES.items():
        values = {"deadline_s": "0.5", "overcommit": "0.25", "server_momentum": "0.5", "server_lr": "0.75",
                  "cloud_every": "3", "async_alpha": "0.4", "async_staleness_exponent": "0.25",
                  "buffer_size": "2", "period_s": "0.3"}
        spec = name + (":" + ",".join(values[p] for p in cls.parameters) if cls.parameters else "")
        sets = policy_overrides(spec + "@oort")
        if name == "hierarchical":
            sets.append(f'topology="{ROOT / "topologies" / "hierarchical.toml"}"')
        sc = load_scenario(None, overrides=sets)
        assert sc.fl.policy == name and sc.fl.selection == "oort"
        for p in cls.parameters:  # each value reached its [fl] field
            assert float(getattr(sc.fl, p)) == float(values[p]), (name, p)
        assert type(build_policy(sc)) is cls


def test_compare_specs_that_do_not_fit_the_registry_are_refused():
    from pwffsim.compare import policy_overrides

    for bad, msg in [("deadline", "expected deadline:deadline_s"), ("sync:1", "expected sync"),
                     ("overselect:1,2,3", "expected overselect"), ("fedavg-x", "unknown name")]:
        with pytest.raises(ValueError, match=msg):
            policy_overrides(bad)


def test_one_policy_object_serves_runs_one_after_the_other():
    """Per-run state (the velocity) starts afresh at every run: two runs with the same object agree."""
    from pwffsim.sim.policies import FedAvgMPolicy

    sc = scenario_from_dict({
        "devices": {"count": 3, "placement": "explicit", "positions_m": [[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]]},
        "channel": {"fading": "none", "shadowing_sigma_db": 0.0},
        "fl": {"rounds": 2, "clients_per_round": 3},
        "pwff": {"scheme": "fedavg-all"},
    })
    policy = FedAvgMPolicy(server_momentum=0.5)
    got = []
    for _ in range(2):
        sim = Simulation(sc, learner=StubLearner(4_000, 1e9), policy=policy)
        sim.run()
        got.append(float(sim.state.global_state["w"][0]))
    assert got == pytest.approx([-2.5 * G, -2.5 * G], rel=1e-6)
