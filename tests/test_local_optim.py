"""Local optimisation (issue 11): the decoupled proximal step, plain SGD, skipped all-zero-advantage
RLOO steps, the KL-to-reference term and per-sample averaged losses. Hand computations on tiny
cases, then a few real updates of the shipped tiny base (2 clients, 16 samples, 4 SFT + 2 RLOO steps).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pwffsim.learn.align import equal_groups, leave_one_out_advantages, sequence_kl
from pwffsim.learn.batches import epoch_order
from pwffsim.learn.data import DataSpec
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.optim import row_cross_entropy, sample_mean
from pwffsim.learn.state import ProximalTerm
from pwffsim.learn.train import Learner, TrainJob, TrainSpec

DATA = dict(num_clients=2, train_samples_per_client=16, eval_samples_per_client=4)
TRAIN = dict(local_steps=4, batch_size=4, align_steps=2, align_prompts=2, align_samples=2,
             align_max_new_tokens=6, metric_prompts=0, eval_batches=0)


class LengthReward:
    """A reward stub: r_help = characters of the response / 40, r_safe = 0 (responses of different
    lengths get different rewards, so the advantages are not all zero)."""

    def score(self, samples, responses):
        return [len(r) / 40 for r in responses], [0.0] * len(responses)


class ConstantReward:
    """Every response scores the same: every leave-one-out advantage is zero."""

    def score(self, samples, responses):
        return [0.7] * len(responses), [0.2] * len(responses)


_LEARNERS: dict = {}


def learner(reward=LengthReward, **kw) -> Learner:
    """A tiny learner with ``kw`` over :data:`TRAIN` and the reward stub (cached per spec)."""
    key = (reward, tuple(sorted(kw.items())))
    if key not in _LEARNERS:
        L = Learner(ModelSpec(), DataSpec(**DATA), TrainSpec(**{**TRAIN, **kw}))
        L.aligner.rewards = reward()
        _LEARNERS[key] = L
    return _LEARNERS[key]


def adapters_anchored_run(L: Learner, seed: int = 1):
    """One update from the initial state with the adapters anchored at their start."""
    start = L.initial_state()
    anchor = {k: start[k] for k in L.group_keys("adapter")}
    return L.run(TrainJob(0, 0, seed, start, prox_anchor=anchor)), start, anchor


def distance(state, anchor) -> float:
    return sum(float(((state[k] - anchor[k]) ** 2).sum()) for k in anchor) ** 0.5


def max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ------------------------------------------------------------------------------ by hand
def test_proximal_operator_on_one_parameter():
    theta, a, lr, mu = 1.5, -0.5, 0.1, 4.0
    p = torch.nn.Parameter(torch.tensor([theta], dtype=torch.float64))
    ProximalTerm([(p, torch.tensor([a], dtype=torch.float64))], mu).after_step(lr)
    # argmin_u mu/2 (u - a)^2 + (u - theta)^2 / (2 lr) = (theta + lr mu a) / (1 + lr mu)
    assert float(p.detach()) == pytest.approx((1.5 + 0.1 * 4.0 * -0.5) / 1.4, rel=1e-14)  # = 0.928571...
    # the gradient form does nothing after the step; no pairs: nothing either
    q = torch.nn.Parameter(torch.tensor([theta]))
    ProximalTerm([(q, torch.tensor([a]))], mu, "gradient").after_step(lr)
    ProximalTerm([], mu).after_step(lr)
    assert float(q.detach()) == theta
    with pytest.raises(ValueError, match="prox_form"):
        ProximalTerm([], mu, "adam")


def test_gradient_form_under_adamw_ignores_mu_where_the_loss_gives_no_gradient():
    """The pathology the decoupled form removes: a proximal gradient alone makes a full lr-sized
    AdamW step (|m / sqrt(v)| = 1 at the first step) whatever mu is; the decoupled step moves
    lr mu / (1 + lr mu) of the distance."""
    lr, theta, a = 1e-2, 0.3, 0.0
    moved = {}
    for form in ("gradient", "decoupled"):
        for mu in (1e-6, 1.0):
            p = torch.nn.Parameter(torch.tensor([theta], dtype=torch.float64))
            prox = ProximalTerm([(p, torch.tensor([a], dtype=torch.float64))], mu, form)
            opt = torch.optim.AdamW([p], lr=lr, weight_decay=0.0)
            loss = 0.0 * p.sum() + (prox() if prox.in_loss else 0.0)
            loss.backward()
            opt.step()
            prox.after_step(lr)
            moved[form, mu] = theta - float(p.detach())
    for mu in (1e-6, 1.0):  # first AdamW step: lr * m_hat / (sqrt(v_hat) + eps) = lr g / (g + eps)
        g = mu * (theta - a)
        assert moved["gradient", mu] == pytest.approx(lr * g / (g + 1e-8), rel=1e-5)
    assert moved["gradient", 1e-6] > 0.95 * moved["gradient", 1.0]  # mu 1e6 times smaller
    for mu in (1e-6, 1.0):
        assert moved["decoupled", mu] == pytest.approx(theta * lr * mu / (1 + lr * mu), rel=1e-9)


def test_sample_and_token_averages_by_hand():
    """Two rows over a 4-token vocabulary: row 0 has one response token with logit x on its target
    (CE = log(e^x + 3) - x), row 1 three response tokens with uniform logits (CE = log 4 each)."""
    V, x = 4, 2.0
    logits = torch.zeros(2, 5, V)
    labels = torch.full((2, 5), -100)
    labels[0, 4] = 1                    # predicted at position 3
    logits[0, 3, 1] = x
    labels[1, 2:5] = torch.tensor([0, 3, 2])
    sums, counts = row_cross_entropy(logits, labels)
    a, b = math.log(math.exp(x) + 3) - x, math.log(4)
    assert counts.tolist() == [1, 3]
    assert sums.tolist() == pytest.approx([a, 3 * b], rel=1e-6)
    assert float(sample_mean(sums, counts)) == pytest.approx((a + b) / 2, rel=1e-6)
    token = float(sums.sum() / counts.sum())
    assert token == pytest.approx((a + 3 * b) / 4, rel=1e-6)
    assert abs(token - (a + b) / 2) > 0.2  # the averages differ here
    # a row without a response token carries no weight
    s3, c3 = torch.cat([sums, torch.tensor([0.0])]), torch.cat([counts, torch.tensor([0])])
    assert float(sample_mean(s3, c3)) == pytest.approx((a + b) / 2, rel=1e-6)


def test_kl_estimate_by_hand_on_a_toy_distribution():
    """Per-token distributions p (policy) and q (reference) over {0, 1, eos = 2}; the estimate of a
    sampled sequence is sum_t log p(y_t)/q(y_t) up to and including the first eos, and its mean
    over one token drawn from p is KL(p || q)."""
    p, q = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.25, 0.5, 0.25])
    seq = torch.tensor([[0, 0, 2, 1], [1, 2, 2, 0]])
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    kl = sequence_kl(p.log()[seq], q.log()[seq], keep)
    assert kl.tolist() == pytest.approx([2 * math.log(2), -math.log(2)], abs=1e-6)
    one = torch.arange(3)[:, None]
    per_token = sequence_kl(p.log()[one], q.log()[one], torch.ones(3, 1, dtype=torch.bool))
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    assert float((p * per_token).sum()) == pytest.approx(exact, rel=1e-6)


def test_equal_groups_and_their_advantages():
    r = torch.tensor([[0.3, 0.3, 0.3], [1.0, 0.0, 0.5]])
    assert equal_groups(r).tolist() == [True, False]
    adv = leave_one_out_advantages(r)
    assert adv[3:].tolist() == pytest.approx([0.75, -0.75, 0.0])


def test_sgd_step_and_decoupled_proximal_step_by_hand():
    """One plain-SGD supervised step (token average) from a perturbed start, the adapters anchored
    elsewhere: theta' = theta - lr g, then theta'' = (theta' + lr mu a) / (1 + lr mu) on the
    anchored keys, with g the gradient of the model's own token-averaged loss on the same batch."""
    lr, mu, seed = 0.05, 3.0, 7
    L = Learner(ModelSpec(), DataSpec(**DATA),
                TrainSpec(**{**TRAIN, "local_steps": 1, "align_steps": 0}, optimizer="sgd",
                          learning_rate=lr, prox_mu=mu, loss_average="token"))
    g = torch.Generator().manual_seed(0)
    start = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in L.initial_state().items()}
    anchor = {k: start[k] + 0.1 for k in L.group_keys("adapter")}
    res = L.run(TrainJob(0, 0, seed, start, prox_anchor=anchor))
    # the gradient by hand: the same batch (epoch_order on the job's generator), the same dropout
    ids, labels = L.client_tensors(0)
    idx = epoch_order(ids.shape[0], L.train_spec.batch_size, torch.Generator().manual_seed(seed))
    L.trainable_state.load(start)
    torch.manual_seed(seed)
    L.model.train()
    L.model(input_ids=ids[idx[:4]], labels=labels[idx[:4]]).loss.backward()
    grads = {k: p.grad.clone() for k, p in L.trainable_state.params.items()}
    L.model.zero_grad(set_to_none=True)
    c = lr * mu
    for k, v in start.items():
        want = v - lr * grads[k]
        if k in anchor:
            want = (want + c * anchor[k]) / (1 + c)
        assert torch.allclose(res.state[k], want, rtol=1e-5, atol=1e-7), k
    assert max_diff({k: res.state[k] for k in anchor}, {k: start[k] for k in anchor}) > 1e-3


# ------------------------------------------------------------------------------ real updates
def test_tiny_mu_is_nearly_no_mu_and_larger_mu_pulls_proportionally():
    res0, start, anchor = adapters_anchored_run(learner(prox_mu=0.0))
    assert res0.align_steps_skipped == 0  # the RLOO steps (and their proximal steps) ran
    update = max_diff(res0.state, start)
    res_tiny, _, _ = adapters_anchored_run(learner(prox_mu=1e-6))
    assert max_diff(res_tiny.state, res0.state) < 1e-6 * update
    d0 = distance(res0.state, anchor)
    mus = (0.5, 1.0, 2.0, 8.0, 64.0)
    d = [distance(adapters_anchored_run(learner(prox_mu=mu))[0].state, anchor) for mu in mus]
    assert all(x > y for x, y in zip([d0, *d], d)), (d0, d)  # monotone in mu
    pull = [d0 - x for x in d]
    # small mu: the pull is linear in mu (d(0) - d(2 mu) = 2 (d(0) - d(mu)) within 10%)
    assert pull[1] / pull[0] == pytest.approx(2.0, rel=0.1)
    assert pull[2] / pull[1] == pytest.approx(2.0, rel=0.1)
    assert d[-1] < 0.7 * d0  # and a large mu holds the global part near the anchor


def test_gradient_form_reproduces_the_adamw_pathology():
    """Under AdamW the old form makes mu = 1e-6 visible (coordinates with a tiny loss gradient take
    an lr-sized step towards the anchor), the decoupled form does not."""
    runs = {(form, mu): adapters_anchored_run(learner(prox_mu=mu, prox_form=form))[0]
            for form in ("gradient", "decoupled") for mu in (0.0, 1e-6)}
    start = learner().initial_state()
    update = max_diff(runs["decoupled", 0.0].state, start)
    assert max_diff(runs["gradient", 0.0].state, runs["decoupled", 0.0].state) == 0.0  # no prox
    assert max_diff(runs["decoupled", 1e-6].state, runs["decoupled", 0.0].state) < 1e-6 * update
    assert max_diff(runs["gradient", 1e-6].state, runs["gradient", 0.0].state) > 1e-3 * update


@pytest.mark.parametrize("form", ["decoupled", "gradient"])
def test_rloo_steps_with_all_zero_advantages_are_skipped(form):
    """Equal rewards for every response: no optimizer and no proximal step, so the state is the
    one after the supervised steps alone (bit for bit), with mu > 0."""
    kw = dict(prox_mu=5.0, prox_form=form)
    skipped, _, _ = adapters_anchored_run(learner(ConstantReward, **kw))
    sft_only, _, _ = adapters_anchored_run(learner(ConstantReward, **kw, align_steps=0))
    assert skipped.align_steps_skipped == 2 and sft_only.align_steps_skipped == 0
    assert max_diff(skipped.state, sft_only.state) == 0.0
    # r = r_help = 0.7 on a benign prompt, 0.5 x 0.7 + 0.5 x 0.2 on a borderline one (prefs 0.5 / 0.5)
    assert 0.45 - 1e-9 <= skipped.align_reward <= 0.7 + 1e-9
    moving, _, _ = adapters_anchored_run(learner(LengthReward, **kw))
    assert moving.align_steps_skipped == 0 and max_diff(moving.state, sft_only.state) > 1e-4


def test_kl_reference_is_the_policy_at_the_start_of_alignment():
    """The first RLOO step's KL is exactly 0 (the reference is the policy after the supervised
    steps), so with one alignment step beta changes nothing; with two it does."""
    one = {b: adapters_anchored_run(learner(align_steps=1, align_kl_coef=b))[0] for b in (0.0, 5.0)}
    assert max_diff(one[5.0].state, one[0.0].state) == 0.0
    two = {b: adapters_anchored_run(learner(align_kl_coef=b))[0] for b in (0.0, 5.0)}
    assert max_diff(two[5.0].state, two[0.0].state) > 1e-6
    assert two[5.0].align_steps_skipped == 0


def test_kl_reference_forward_is_charged_and_counted():
    L = learner(align_kl_coef=0.5)
    off = learner()
    parts, parts_off = L.cost_breakdown["flops_by_part"], off.cost_breakdown["flops_by_part"]
    assert "align_reference" not in parts_off
    assert "align_reference" in L.cost_breakdown["charged_parts"]
    # the reference pass is the policy-gradient pass's forward: pg = ref * (fwd + bwd) / fwd
    ts, P = L.train_spec, L.prompt_len
    n = ts.align_steps * ts.align_prompts * ts.align_samples * (P + ts.align_max_new_tokens - 1)
    assert L.cost_breakdown["tokens_by_part"]["align_reference"] == n
    assert parts["align_reference"] < parts["align_policy_gradient"] / 2
    flops, _ = L.estimate_cost()
    assert flops == pytest.approx(off.estimate_cost()[0] + parts["align_reference"], rel=1e-12)
    counter = FlopCounterMode(display=False)
    with counter:
        res, _, _ = adapters_anchored_run(L)
    L.model.zero_grad(set_to_none=True)
    assert res.flops == flops and res.align_steps_skipped == 0
    assert abs(flops / counter.get_total_flops() - 1) < 0.01


def test_eval_loss_sample_and_token_averages():
    """eval_loss against HF's own per-row loss: 'sample' = mean of the rows' means, 'token' = the
    rows' means weighted by their response-token counts."""
    kw = dict(eval_batches=2)
    Ls, Lt = learner(**kw), learner(**kw, loss_average="token")
    state = Ls.initial_state()
    ids, labels = Ls.batches[0].eval
    Ls.trainable_state.load(state)
    Ls.model.eval()
    with torch.no_grad():
        means = [float(Ls.model(input_ids=ids[i:i + 1], labels=labels[i:i + 1]).loss)
                 for i in range(ids.shape[0])]
    counts = [int((labels[i, 1:] != -100).sum()) for i in range(ids.shape[0])]
    assert len(set(counts)) > 1  # rows of different lengths: the two averages differ
    sample, token = Ls.evaluate(state, 0), Lt.evaluate(state, 0)
    assert sample == pytest.approx(sum(means) / len(means), rel=1e-5)
    assert token == pytest.approx(sum(m * c for m, c in zip(means, counts)) / sum(counts), rel=1e-5)
    assert abs(sample - token) > 1e-3


def test_spec_and_scenario_validation():
    for bad in (dict(optimizer="adam"), dict(loss_average="row"), dict(prox_form="exact"),
                dict(align_kl_coef=-0.1), dict(align_kl_coef=float("inf"))):
        with pytest.raises(ValueError):
            TrainSpec(**bad)
    from pwffsim.scenario import scenario_from_dict
    from pwffsim.sim.builders import learner_spec_kwargs

    sc = scenario_from_dict({"fl": {"optimizer": "sgd", "loss_average": "token"},
                             "pwff": {"prox_form": "gradient", "align_kl_coef": 0.1}})
    train = learner_spec_kwargs(sc)["train"]
    assert (train["optimizer"], train["loss_average"], train["prox_form"], train["align_kl_coef"]) \
        == ("sgd", "token", "gradient", 0.1)
    default = learner_spec_kwargs(scenario_from_dict({}))["train"]
    assert (default["optimizer"], default["loss_average"], default["prox_form"],
            default["align_kl_coef"]) == ("adamw", "sample", "decoupled", 0.0)
    for bad in ({"fl": {"optimizer": "adam"}}, {"fl": {"loss_average": "row"}},
                {"pwff": {"prox_form": "x"}}, {"pwff": {"align_kl_coef": -1.0}}):
        with pytest.raises(ValueError):
            scenario_from_dict(bad)
