"""Fuzzed inputs: random overrides never crash the loader (one-line ScenarioError or a scenario), and
random valid scenarios (policies, selection, channel models, mobility, topologies, small batteries)
run to the end with every device's energy balance intact."""
import random

from pwffsim.scenario import ScenarioError, load_scenario, reference_rows
from pwffsim.sim.engine import Simulation

from conftest import StubLearner


def test_random_overrides_give_a_scenario_or_a_one_line_error():
    keys = [r[0].replace("[]", ".0") for r in reference_rows()]
    vals = ["1", "-1", "0", "1e309", '"x"', "[1,2]", "{a=1}", "true", "nan", "inf", '""', "[]", "3.5",
            "[[1,2]]", '"UMa"', '"trace"', '"explicit"', '"hierarchical"']
    rng = random.Random(0)
    for _ in range(1500):
        ov = [f"{rng.choice(keys)}={rng.choice(vals)}" for _ in range(rng.randint(1, 3))]
        try:
            load_scenario(None, overrides=ov)
        except ScenarioError as err:
            assert "\n" not in str(err)


CHOICES = {
    "fl.policy": ["'sync'", "'deadline'", "'overselect'", "'fedasync'", "'fedbuff'", "'semisync'"],
    "fl.selection": ["'uniform'", "'channel'", "'battery'", "'oort'"],
    "channel.fading": ["'none'", "'rayleigh'", "'rician'"],
    "channel.path_loss": ["'macro-128.1-37.6'", "'free-space'", "'UMa'", "'UMi'", "'RMa'"],
    "mobility.model": ["'static'", "'random-waypoint'", "'gauss-markov'"],
    "devices.profiles.0.battery_j": ["0.5", "5", "500"],
    "devices.profiles.1.battery_j": ["0.5", "5", "500"],
    "channel.interference": ["true", "false"],
    "fl.period_s": ["0.01", "0.2"],
    "fl.buffer_size": ["1", "2", "4"],
    "topology": ["'topologies/hex7_umi.toml'", "'topologies/hierarchical.toml'"],
}


def test_random_scenarios_run_and_balance_energy(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    rng = random.Random(1)
    ran = 0
    for _ in range(30):
        ov = ["fl.rounds=3", "devices.count=6", "fl.clients_per_round=3", "pwff.scheme='fedavg-all'", "fl.deadline_s=0.3"]
        ov += [f"{k}={rng.choice(v)}" for k, v in CHOICES.items() if rng.random() < 0.5]
        try:
            sc = load_scenario(None, overrides=ov)
        except ScenarioError:
            continue
        sim = Simulation(sc, learner=StubLearner(400_000, 5e9))
        sim.run()
        ran += 1
        for d in sim.devices:
            spent = sum(e["energy_j"] for e in sim.events if e["client"] == d.index)
            assert abs(d.battery.capacity_j - d.battery.level_j - spent) < 1e-9, ov
    assert ran >= 20
