"""Global partial aggregation in the simulator: personal parts never leave the device, global parts are
the weighted mean, and the payload is exactly the global tensors' bytes."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pwffsim.scenario import load_scenario
from pwffsim.sim.engine import Simulation
from pwffsim.sim.executor import InProcessExecutor

TINY = ["fl.rounds=2", "devices.count=5", "fl.clients_per_round=3", "pwff.align_steps=0", "pwff.metric_prompts=2"]


def spied_sim(overrides):
    sc = load_scenario(None, overrides=[*TINY, *overrides])
    sim = Simulation(sc)
    seen = []
    orig = sim.learner.run

    def spy(job):
        res = orig(job)
        seen.append((job, res))
        return res

    sim.learner.run = spy
    sim.executor = InProcessExecutor(sim.learner)
    return sim, seen


# Clients of different sizes (5 devices in TINY), so that a weighted and an unweighted mean differ.
SIZES = [8, 24, 40, 56, 72]


def test_pwff_personal_lora_is_bit_identical_and_global_adapters_are_the_weighted_mean():
    sim, seen = spied_sim(["pwff.scheme='pwff'", f"data.train_samples_per_client={SIZES}"])
    init = sim.learner.initial_state()
    sim.run()
    lora = [k for k in init if "lora_" in k]
    adapters = [k for k in init if "adapter" in k]
    assert lora and adapters
    assert set(sim.global_keys) == set(adapters) and set(sim.personal_keys) == set(lora)
    # Personal: each client keeps exactly the LoRA its last local update produced; untouched clients keep the init.
    last = {}
    for job, res in seen:
        last[job.client] = res
    for k in range(sim.sc.devices.count):
        personal = sim.state.personal_state.get(k)
        if k in last:
            for key in lora:
                assert torch.equal(personal[key], last[k].state[key])
        else:
            assert personal is None
    # A round's jobs start from their own client's previous LoRA, never another client's.
    for job, _ in seen:
        prev = [res for j, res in seen if j.client == job.client and j.round < job.round]
        want = prev[-1].state if prev else init
        for key in lora:
            assert torch.equal(job.start_state[key], want[key])
    # Global: the last round's adapters are the sample-weighted mean of that round's aggregated updates.
    final_round = max(j.round for j, _ in seen)
    agg = [res for j, res in seen if j.round == final_round]
    assert sim.rounds[-1]["aggregated"] == len(agg)
    assert all(res.num_samples == SIZES[job.client] for job, res in seen)
    total = sum(r.num_samples for r in agg)
    plain_differs = False
    for key in adapters:
        expected = sum(r.state[key].double() * (r.num_samples / total) for r in agg)
        torch.testing.assert_close(sim.state.global_state[key].double(), expected, rtol=1e-6, atol=1e-8)
        plain = sum(r.state[key].double() for r in agg) / len(agg)
        plain_differs |= not torch.allclose(plain, expected, rtol=1e-6, atol=1e-8)
    assert plain_differs  # the check above tells a weighted from an unweighted mean
    assert not any(key in sim.state.global_state for key in lora)


def _global_bytes(sim, groups):
    # independent count from the model's own parameters (not from the state dicts the engine sends)
    n = 0
    for name, p in sim.learner.model.named_parameters():
        if not p.requires_grad:
            continue
        group = "adapter" if "adapter" in name else "lora"
        if group in groups:
            n += p.numel() * p.element_size()
    return n


@pytest.mark.parametrize("scheme,groups", [("pwff", {"adapter"}), ("lora-global", {"lora"}),
                                           ("fedavg-all", {"adapter", "lora"})])
def test_upload_bytes_equal_the_global_tensors(scheme, groups):
    sim, _ = spied_sim([f"pwff.scheme='{scheme}'"])
    sim.run()
    want = _global_bytes(sim, groups)
    ups = [e for e in sim.events if e["kind"] == "upload"]
    assert ups and all(e["bytes"] == want for e in ups)
    downs = [e for e in sim.events if e["kind"] == "download"]
    assert downs and all(e["bytes"] == want for e in downs)
    assert sim.rounds[0]["bytes_up"] == want * sim.rounds[0]["aggregated"]


def test_local_only_sends_nothing_and_keeps_everything_personal():
    sim, seen = spied_sim(["pwff.scheme='local-only'"])
    sim.run()
    assert not [e for e in sim.events if e["kind"] in ("upload", "download")]
    assert sim.state.global_state == {}
    assert all(r["bytes_up"] == 0 and r["bytes_down"] == 0 for r in sim.rounds)


def test_partial_aggregation_uploads_less_and_sooner_than_full():
    res = {}
    for scheme in ("pwff", "fedavg-all"):
        sc = load_scenario(None, overrides=[*TINY, f"pwff.scheme='{scheme}'", "channel.fading='none'",
                                            "cells.0.uplink_bandwidth_hz=2e5"])
        sim = Simulation(sc)
        sim.run()
        ups = [e for e in sim.events if e["kind"] == "upload"]
        res[scheme] = (sum(e["bytes"] for e in ups), sum(e["t_end_s"] - e["t_start_s"] for e in ups),
                       sum(e["energy_j"] for e in ups))
    assert res["pwff"][0] < res["fedavg-all"][0]
    assert res["pwff"][1] < res["fedavg-all"][1]
    assert res["pwff"][2] < res["fedavg-all"][2]


def test_clients_and_final_tables_carry_personalized_metrics(tmp_path):
    sc = load_scenario(None, overrides=[*TINY, "pwff.preference='explicit'",
                                        "pwff.w_help_per_client=[0.0, 0.25, 0.5, 0.75, 1.0]"])
    Simulation(sc, out_dir=str(tmp_path)).run()
    clients = pd.read_parquet(tmp_path / "clients.parquet")
    trained = clients[clients.train_loss.notna()]
    assert trained[["reward_help", "reward_help_borderline", "reward_safe"]].stack().between(0, 1).all()
    # 2 stratified metric prompts: one benign (help only), one borderline (w_help help + w_safe safe)
    obj = (trained.reward_help + trained.w_help * trained.reward_help_borderline
           + (1 - trained.w_help) * trained.reward_safe) / 2
    assert (obj - trained.objective).abs().max() < 1e-9
    assert trained.personalization_gap.notna().all()
    final = pd.read_parquet(tmp_path / "final.parquet")
    assert list(final.client) == [0, 1, 2, 3, 4]
    assert list(final.w_help) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert final.eval_loss_others.notna().all()
    gap = final.eval_loss_global_only - final.eval_loss
    assert (gap - final.personalization_gap).abs().max() < 1e-12
    never = final[final.trained_rounds == 0]  # personal part still initial: no gap at all
    assert (never.personalization_gap == 0).all()
    # the floor: refusing everything earns w_safe on the one borderline prompt, 0 on the benign one
    assert np.allclose(final.objective_always_refuse, (1 - final.w_help) / 2)
