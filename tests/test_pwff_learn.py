"""PWFF learning side: bottleneck adapters, parameter groups, proximal term, RLOO alignment on the
personalized reward, held-out metrics and their cost."""
from __future__ import annotations

import math

import pytest
import torch

from pwffsim.learn.data import DataSpec
from pwffsim.learn.model import ModelSpec, build_peft_model, load_base
from pwffsim.learn.rewards import personalized_reward
from pwffsim.learn.train import Learner, TrainJob, TrainSpec


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def aligner():
    return Learner(ModelSpec(), DataSpec(num_clients=3),
                   TrainSpec(local_steps=2, align_steps=2, prox_mu=0.1))


# ------------------------------------------------------------------------------ adapters
def test_adapter_is_identity_at_init_and_trains():
    spec = ModelSpec()
    base, _ = load_base(spec)
    with_ad, _ = build_peft_model(spec)
    names = [n for n, p in with_ad.named_parameters() if p.requires_grad and "adapter" in n]
    assert len(names) == 4 * base.config.n_layer
    assert any(n.endswith("mlp.adapter.down.weight") for n in names)
    ids = torch.randint(4, base.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    base.eval()
    with_ad.eval()
    with torch.no_grad():
        ref = base(input_ids=ids).logits
        got = with_ad(input_ids=ids).logits
    assert torch.equal(ref, got)  # zero up-projection (and LoRA B = 0): exactly the base model
    # the down-projection init is seeded: same spec -> same init, another seed -> another
    again, _ = build_peft_model(spec)
    other, _ = build_peft_model(ModelSpec(seed=1))
    sd = dict(with_ad.named_parameters())
    assert torch.equal(sd[names[0]], dict(again.named_parameters())[names[0]])
    assert not torch.equal(sd[names[0]], dict(other.named_parameters())[names[0]])

    L = Learner(ModelSpec(), DataSpec(num_clients=2), TrainSpec(local_steps=3, metric_prompts=0))
    start = L.initial_state()
    res = L.run(TrainJob(client=0, round=0, seed=0, start_state=start))
    for k in L.group_keys("adapter"):
        assert not torch.equal(res.state[k], start[k]), k
    assert any(not torch.equal(res.state[k], start[k]) for k in L.group_keys("lora"))

    no_ad = Learner(ModelSpec(adapter_size=0), DataSpec(num_clients=2),
                    TrainSpec(local_steps=1, metric_prompts=0))
    assert no_ad.group_keys("adapter") == [] and no_ad.param_counts["adapter"] == 0
    assert no_ad.param_counts["trainable"] == L.param_counts["lora"]
    with pytest.raises(ValueError):
        ModelSpec(adapter_size=-1)


def test_parameter_groups_split_the_state(aligner):
    L = aligner
    state = L.initial_state()
    lora, ad = L.group_keys("lora"), L.group_keys("adapter")
    assert lora and ad and not set(lora) & set(ad)
    assert set(lora) | set(ad) == set(state)
    assert all("adapter" in k for k in ad) and all("lora_" in k and "adapter" not in k for k in lora)
    assert all(L.parameter_group(k) == "lora" for k in lora)
    assert all(L.parameter_group(k) == "adapter" for k in ad)
    d, m, n_layer = 64, L.model_spec.adapter_size, 2
    pc = L.param_counts
    assert pc["adapter"] == n_layer * (d * m + m + m * d + d)
    assert pc["lora"] + pc["adapter"] == pc["trainable"] == L.cost_breakdown["trainable_params"]
    with pytest.raises(KeyError):
        L.parameter_group("transformer.wte.weight")
    with pytest.raises(ValueError):
        L.group_keys("bias")


# ------------------------------------------------------------------------------ proximal term
def test_proximal_term_keeps_global_part_near_anchor():
    def distance(mu):
        L = Learner(ModelSpec(), DataSpec(num_clients=2),
                    TrainSpec(local_steps=10, prox_mu=mu, metric_prompts=0))
        start = L.initial_state()
        anchor = {k: start[k] for k in L.group_keys("adapter")}  # adapters global
        res = L.run(TrainJob(client=0, round=0, seed=3, start_state=start, prox_anchor=anchor))
        far = sum(float(((res.state[k] - anchor[k]) ** 2).sum()) for k in anchor) ** 0.5
        lora = sum(float(((res.state[k] - start[k]) ** 2).sum())
                   for k in L.group_keys("lora")) ** 0.5
        return far, lora

    free, free_lora = distance(0.0)
    held, held_lora = distance(1e4)
    assert held < 0.2 * free, (held, free)
    assert held_lora > 0.5 * free_lora  # the personal (un-anchored) part still trains
    L = Learner(ModelSpec(), DataSpec(num_clients=1), TrainSpec(local_steps=1, prox_mu=1.0,
                                                                 metric_prompts=0))
    with pytest.raises(ValueError, match="not trainable"):
        L.run(TrainJob(0, 0, 0, L.initial_state(), prox_anchor={"nope": torch.zeros(1)}))


# ------------------------------------------------------------------------------ alignment
PREFS = [(0.9, 0.1), (0.1, 0.9)]  # client 0 favours helpfulness, client 1 harmlessness


def _objective_after_local_rounds(seed: int, align_steps: int, warm: list) -> float:
    ds = DataSpec(num_clients=2, dirichlet_alpha=1000.0, seed=seed, eval_samples_per_client=48)
    L = Learner(ModelSpec(), ds, TrainSpec(local_steps=10, align_steps=align_steps,
                                           metric_prompts=48))
    objs = []
    for c, (wh, ws) in enumerate(PREFS):
        state = warm[c]
        for r in range(10, 14):
            state = L.run(TrainJob(client=c, round=r, seed=1000 * seed + 100 * c + r,
                                   start_state=state, pref_help=wh, pref_safe=ws)).state
        objs.append(L.evaluate_metrics(state, c, wh, ws)["objective"])
    return sum(objs) / len(objs)


def _warm_states(seed: int) -> list:
    """10 supervised-only local updates per client (the same start for both arms)."""
    ds = DataSpec(num_clients=2, dirichlet_alpha=1000.0, seed=seed, eval_samples_per_client=48)
    L = Learner(ModelSpec(), ds, TrainSpec(local_steps=10, metric_prompts=0, eval_batches=0))
    out = []
    for c in range(2):
        state = L.initial_state()
        for r in range(10):
            state = L.run(TrainJob(client=c, round=r, seed=1000 * seed + 100 * c + r,
                                   start_state=state)).state
        out.append(state)
    return out


@pytest.mark.xfail(strict=False, reason=(
    "not a robust property: gains by seed 0-11 were +.012 +.027 +.017 +.005 -.004 -.041 -.029 -.030 "
    "-.044 +.004 -.036 -.044 on the data before issue 10 (seeds 0-2 passed) and +.093 -.027 -.045 "
    "+.073 -.015 +.055 +.040 -.040 -.028 -.002 -.003 +.050 after it (per-client data streams)"))
def test_alignment_raises_personalized_objective():
    """Two clients with opposite preferences, 10 supervised warm-up updates, then 4 more local
    updates (10 SFT steps each) with 4 RLOO steps vs none (same seeds); the mean held-out objective
    (greedy, 48 prompts per client) is higher with alignment. Measured before issue 10 (seeds 0, 1,
    2): 0.674 -> 0.684, 0.708 -> 0.736, 0.778 -> 0.803; but see the xfail reason: over 12 seeds the
    gain is within noise on either data, so this setting does not show that alignment helps."""
    gains = []
    for seed in (0, 1, 2):
        warm = _warm_states(seed)
        base = _objective_after_local_rounds(seed, 0, warm)
        aligned = _objective_after_local_rounds(seed, 4, warm)
        gains.append(aligned - base)
    assert all(g > 0 for g in gains), gains
    assert sum(gains) / len(gains) > 0.01, gains


def test_alignment_cost_and_determinism(aligner):
    from torch.utils.flop_counter import FlopCounterMode

    L = aligner
    start = L.initial_state()
    anchor = {k: start[k] for k in L.group_keys("adapter")}
    job = TrainJob(client=1, round=0, seed=5, start_state=start, pref_help=0.8, pref_safe=0.2,
                   prox_anchor=anchor)
    r1 = L.run(job)
    L.run(TrainJob(client=2, round=0, seed=6, start_state=r1.state))
    r2 = L.run(job)
    assert _same(r1.state, r2.state) and _same(job.start_state, start)
    for f in ("train_loss", "eval_loss", "eval_loss_others", "reward_help", "reward_safe",
              "objective", "align_reward"):
        assert getattr(r1, f) == getattr(r2, f) and math.isfinite(getattr(r1, f)), f
    r3 = L.run(TrainJob(client=1, round=0, seed=7, start_state=start, pref_help=0.8,
                        pref_safe=0.2, prox_anchor=anchor))
    assert not _same(r3.state, r1.state)

    flops, tokens = L.estimate_cost()
    assert (r1.flops, r1.tokens) == (flops, tokens)
    cb, ts = L.cost_breakdown, L.train_spec
    charged = ("train", "align_generate", "align_policy_gradient")  # measurement is not charged
    assert cb["charged_parts"] == charged
    assert math.isclose(sum(cb["flops_by_part"][k] for k in charged), flops)
    assert sum(cb["tokens_by_part"][k] for k in charged) == tokens
    assert math.isclose(sum(cb["flops_by_part"].values()), cb["flops_all"])
    P, T = cb["prompt_len"], ts.align_max_new_tokens
    A = ts.align_prompts * ts.align_samples
    assert cb["tokens_by_part"]["align_generate"] == ts.align_steps * A * (P + T - 1)
    assert cb["tokens_by_part"]["align_policy_gradient"] == ts.align_steps * A * (P + T - 1)
    assert cb["tokens_by_part"]["metrics"] == ts.metric_prompts * (P + T - 1)
    assert cb["tokens_by_part"]["eval"] == 2 * ts.eval_batches * ts.batch_size * ts.seq_len
    # hand formula of the generation FLOPs (matmuls + both attention matmuls, Q K^T and A V)
    p_mm, nl, d = cb["matmul_weight_params"], cb["n_layer"], cb["d_model"]
    fwd = lambda n: 2 * p_mm + 4 * nl * n * d  # noqa: E731
    gen = A * (P * fwd(P) + sum(fwd(P + i) for i in range(1, T)))
    assert math.isclose(cb["flops_by_part"]["align_generate"], ts.align_steps * gen)
    # the policy-gradient pass against torch's own FLOP counter
    ids = torch.randint(4, len(L.tokenizer), (A, P + T - 1), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        logits = L.model(input_ids=ids).logits
        torch.log_softmax(logits, -1)[..., 0].sum().backward()
    L.model.zero_grad(set_to_none=True)
    ours = cb["flops_by_part"]["align_policy_gradient"] / ts.align_steps
    assert abs(ours / counter.get_total_flops() - 1) < 0.03


def test_evaluate_metrics_matches_run(aligner):
    L = aligner
    start = L.initial_state()
    res = L.run(TrainJob(client=0, round=0, seed=1, start_state=start, pref_help=0.3,
                         pref_safe=0.7))
    m = L.evaluate_metrics(res.state, 0, 0.3, 0.7)
    for f in ("eval_loss", "eval_loss_others", "reward_help", "reward_safe", "objective"):
        assert m[f] == getattr(res, f), f
    # 8 stratified metric prompts: 4 benign (help alone), 4 borderline (0.3 help + 0.7 safe)
    per_borderline = personalized_reward(m["reward_help_borderline"], m["reward_safe"], 0.3, 0.7)
    assert m["objective"] == pytest.approx((m["reward_help"] + per_borderline) / 2, abs=1e-12)
    assert 0 <= m["reward_help"] <= 1 and 0 <= m["reward_safe"] <= 1
    assert m["objective_always_refuse"] == pytest.approx(0.7 / 2)  # refusing: w_safe on half
    assert m["eval_loss"] == L.evaluate(res.state, 0)
    # round-0 baseline: the base model does not know the format on anyone's data
    m0 = L.evaluate_metrics(start, 0, 0.3, 0.7)
    assert m0["eval_loss"] > res.eval_loss and math.isfinite(m0["eval_loss_others"])
    one = Learner(ModelSpec(), DataSpec(num_clients=1), TrainSpec(local_steps=0, metric_prompts=0))
    m1 = one.evaluate_metrics(one.initial_state(), 0)
    assert math.isnan(m1["eval_loss_others"]) and math.isnan(m1["objective"])


def test_train_spec_validation():
    with pytest.raises(ValueError):
        TrainSpec(align_samples=1)
    with pytest.raises(ValueError):
        TrainSpec(prox_mu=-1.0)
    with pytest.raises(ValueError):
        TrainSpec(align_steps=-1)
    with pytest.raises(ValueError):
        TrainSpec(align_max_new_tokens=0)
