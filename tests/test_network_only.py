"""Network-only mode (learning.mode = "none"): nothing trains, every update is charged the cost
model's FLOPs and payload, torch stays out of the simulating process."""
import math
import os
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    old = os.environ.get("PWFFSIM_CACHE_DIR")
    os.environ["PWFFSIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("charged-cache"))
    yield
    if old is None:
        os.environ.pop("PWFFSIM_CACHE_DIR", None)
    else:
        os.environ["PWFFSIM_CACHE_DIR"] = old


def _scenario(*sets, battery_j=1e9):
    from pwffsim.scenario import load_scenario

    sc = load_scenario(None, overrides=["learning.mode='none'", *sets])
    for p in sc.devices.profiles:  # Llama-3.2-1B's updates would empty the default batteries
        p.battery_j = battery_j
    return sc


def test_default_scenario_charged_for_llama_3_2_1b(tmp_path):
    from pwffsim.learn.network_only import NetworkOnlyLearner
    from pwffsim.sim.engine import Simulation

    sc = _scenario("model.cost_model='llama-3.2-1b'", "fl.rounds=2")
    sim = Simulation(sc, out_dir=str(tmp_path))
    summary = sim.run()
    assert isinstance(sim.learner, NetworkOnlyLearner)
    global_params = 16 * (2 * 2048 * 16 + 16 + 2048)  # pwff: Llama-3.2-1B's 16 adapters (weights, biases)
    assert sim.learner.counts.group_params["adapter"] == global_params
    ups = [e for e in sim.events if e["kind"] == "upload" and e["status"] == "ok"]
    assert ups and all(e["bytes"] == global_params * 4 == 4_326_400 for e in ups)
    flops = sim.learner.estimate_cost()[0]
    computes = [e for e in sim.events if e["kind"] == "compute"]
    assert computes
    for e in computes:
        prof = sim.devices[e["client"]].profile
        assert e["t_end_s"] - e["t_start_s"] == pytest.approx(flops / prof.flops_per_s, rel=1e-9)
    assert summary["learning_mode"] == "none" and summary["charged_model"] == "llama-3.2-1b"
    assert summary["payload_bytes_per_transfer"] == 4_326_400
    assert summary["bytes_up"] == 4_326_400 * summary["aggregated_updates"] > 0
    assert summary["first_train_loss"] is None
    assert all(math.isnan(r["train_loss"]) and math.isnan(r["objective"]) for r in sim.clients)
    assert all(math.isnan(f["eval_loss"]) for f in sim.final)


def test_counts_equal_the_real_learners():
    """What network-only mode charges is what the torch learner charges for the same scenario."""
    from pwffsim.sim.builders import build_learner

    sc = _scenario("model.cost_model='qwen2.5-0.5b'", "model.update_dtype='bf16'", "pwff.scheme='fedavg-all'")
    net = build_learner(sc)
    real = build_learner(_scenario("model.cost_model='qwen2.5-0.5b'", "model.update_dtype='bf16'",
                                   "pwff.scheme='fedavg-all'", "learning.mode='train'"))
    assert net.estimate_cost() == real.estimate_cost()
    for groups in (("adapter",), ("lora",), ("adapter", "lora")):
        assert net.charged_payload_bytes(groups) == real.charged_payload_bytes(groups)
    assert [net.num_samples(k) for k in range(3)] == [real.num_samples(k) for k in range(3)]


def test_without_a_cost_model_the_trained_model_is_charged():
    from pwffsim.sim.builders import build_learner

    net = build_learner(_scenario())
    assert net.counts.name == "builtin-tiny" and net.counts.base_params < 200_000


def test_oort_gets_a_constant_stand_in_loss():
    from pwffsim.sim.engine import Simulation

    sim = Simulation(_scenario("fl.selection='oort'", "fl.rounds=3"))
    sim.run()
    trained = [r for r in sim.clients if r["status"] == "ok"]
    assert trained and all(r["train_loss"] == 1.0 for r in trained)
    assert all(math.isnan(r["objective"]) for r in trained)


def test_no_process_pool_and_no_hierarchical():
    from pwffsim.scenario.loading import ScenarioError
    from pwffsim.sim.builders import build_executor, build_learner
    from pwffsim.sim.executor import InProcessExecutor

    sc = _scenario("execution.executor='process'")
    assert isinstance(build_executor(sc, build_learner(sc)), InProcessExecutor)
    with pytest.raises(ScenarioError, match="hierarchical"):
        _scenario("fl.policy='hierarchical'", "topology='x.toml'")


def test_torch_is_not_imported_in_network_only_mode():
    code = ("import sys\n"
            "from pwffsim.scenario import load_scenario\n"
            "from pwffsim.sim.engine import Simulation\n"
            "sc = load_scenario(None, overrides=[\"learning.mode='none'\", \"model.cost_model='llama-3.2-1b'\", "
            "'fl.rounds=1'])\n"
            "s = Simulation(sc).run()\n"
            "assert s['learning_mode'] == 'none'\n"
            "print('@@', 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ)).stdout
    assert out.split("@@", 1)[1].split() == ["False", "False"]


def test_ten_thousand_devices_hundred_clients_per_round():
    from pwffsim.sim.engine import Simulation

    sc = _scenario("model.cost_model='qwen2.5-0.5b'", "devices.count=10000", "devices.radius_m=2000",
                   "fl.clients_per_round=100", "fl.rounds=3", "channel.fading='rayleigh'",
                   "fl.final_evaluation='none'")
    t0 = time.perf_counter()
    summary = Simulation(sc).run()
    wall = time.perf_counter() - t0
    assert summary["rounds"] == 3 and summary["aggregated_updates"] > 200
    assert wall < 120, wall
