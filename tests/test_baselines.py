"""Personalized-FL baselines next to the four schemes: FedRep (pwff's split, personal LoRA then global
adapters trained in turn) and Ditto (the FedAvg global track plus a personal full model per device
pulled towards the download), checked against hand-written loops, FedAvg itself and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pwffsim.learn.batches import epoch_order
from pwffsim.learn.data import DataSpec
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.train import Learner, TrainJob, TrainSpec

DATA = DataSpec(num_clients=3, train_samples_per_client=8, eval_samples_per_client=4)
TRAIN = dict(local_steps=2, batch_size=4, align_steps=0, metric_prompts=2, prox_mu=0.1)
# The shipped tiny base: 2 blocks, d = 64; LoRA r = 8 on c_attn; adapters m = 16 (ModelSpec defaults).
N_LAYER, D, R, M = 2, 64, 8, 16


def _learner(**kw) -> Learner:
    return Learner(ModelSpec(), DATA, TrainSpec(**{**TRAIN, **kw}))


@pytest.fixture(scope="module")
def joint():
    return _learner()


@pytest.fixture(scope="module")
def fedrep0():
    return _learner(local_scheme="fedrep", fedrep_global_steps=0)


@pytest.fixture(scope="module")
def fedrep3():
    return _learner(local_scheme="fedrep", fedrep_global_steps=3)


@pytest.fixture(scope="module")
def ditto0():
    return _learner(local_scheme="ditto", ditto_lambda=0.0)


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _dist(a, b) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt())


def _trained(L: Learner, client: int, seed: int) -> dict:
    """A state away from the initial one (a joint learner's update from it)."""
    return L.run(TrainJob(client=client, round=0, seed=seed, start_state=L.initial_state())).state


# ------------------------------------------------------------------------------------- FedRep
def test_fedrep_without_global_steps_uploads_the_download_and_moves_only_lora(fedrep0):
    L = fedrep0
    start = L.initial_state()
    adapters = L.group_keys("adapter")
    res = L.run(TrainJob(client=0, round=0, seed=4, start_state=start, local_scheme="fedrep",
                         prox_anchor={k: start[k] for k in adapters}))
    assert all(torch.equal(res.state[k], start[k]) for k in adapters)
    assert any(not torch.equal(res.state[k], start[k]) for k in L.group_keys("lora"))
    assert math.isfinite(res.train_loss) and math.isfinite(res.eval_loss)


def _hand_fedrep(L: Learner, job: TrainJob, global_steps: int) -> dict:
    """FedRep written out: the job's seed, personal (LoRA) steps with the adapters' requires_grad off
    and only LoRA in the optimizer, then global (adapter) steps the other way round, each followed by
    the exact proximal step of mu/2 ||theta - anchor||^2 on the adapters; per-sample averaged loss
    (the defaults fl.loss_average = "sample", pwff.prox_form = "decoupled")."""
    ts, model = L.train_spec, L.model
    params = dict(L.trainable_state.params)
    lora = [p for k, p in params.items() if L.parameter_group(k) == "lora"]
    adapters = {k: p for k, p in params.items() if L.parameter_group(k) == "adapter"}
    torch.manual_seed(job.seed)
    gen = torch.Generator().manual_seed(job.seed)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(job.start_state[k])
    ids, labels = L.client_tensors(job.client)

    def phase(train, freeze, steps, anchor):
        for p in freeze:
            p.requires_grad_(False)
        order = epoch_order(ids.shape[0], steps * ts.batch_size, gen)
        opt = torch.optim.AdamW(train, lr=ts.learning_rate, weight_decay=0.0)
        model.train()
        for s in range(steps):
            idx = order[s * ts.batch_size:(s + 1) * ts.batch_size]
            logits = model(input_ids=ids[idx]).logits[:, :-1]
            tgt = labels[idx][:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100,
                                                   reduction="none")
            loss = ((ce * (tgt != -100)).sum(1) / (tgt != -100).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                c = ts.learning_rate * ts.prox_mu
                for k, a in (anchor or {}).items():
                    adapters[k].copy_((adapters[k] + c * a) / (1 + c))
        for p in freeze:
            p.requires_grad_(True)

    phase(lora, list(adapters.values()), ts.local_steps, None)
    phase(list(adapters.values()), lora, global_steps, job.prox_anchor)
    model.eval()
    return {k: p.detach().clone() for k, p in params.items()}


def test_fedrep_equals_a_hand_written_alternating_loop(fedrep3, joint):
    L = fedrep3
    start = _trained(joint, client=1, seed=9)  # LoRA B and adapter ups nonzero: both parts matter
    anchor = {k: start[k].clone() for k in L.group_keys("adapter")}
    job = TrainJob(client=2, round=1, seed=11, start_state=start, local_scheme="fedrep", prox_anchor=anchor)
    res = L.run(job)
    hand = _hand_fedrep(L, job, global_steps=3)
    assert res.state.keys() == hand.keys()
    # float32, the per-sample loss summed in another order than the learner's: within 1e-5
    assert max(float((res.state[k] - hand[k]).abs().max()) for k in hand) < 1e-5
    # and it is not the joint update (which trains both parts at once on the same batches)
    both = joint.run(TrainJob(client=2, round=1, seed=11, start_state=start, prox_anchor=anchor)).state
    assert max(float((res.state[k] - both[k]).abs().max()) for k in hand) > 1e-4


def _hand_token_terms(vocab: int) -> dict:
    """P_mm, and (P_ng, P_tm) with everything / only LoRA / only the adapters trainable."""
    block = D * 3 * D + D * D + D * 4 * D + 4 * D * D
    lora, adapter = N_LAYER * (R * D + R * 3 * D), N_LAYER * 2 * D * M
    p_mm = N_LAYER * block + lora + adapter + vocab * D
    first = D * 3 * D + R * D  # block 0's c_attn and its LoRA A read the frozen embeddings
    # only the adapters train: nothing before block 0's adapter needs an input gradient (its
    # attention with LoRA A/B, both MLP projections, the adapter's down-projection)
    first_frozen = D * 3 * D + R * D + R * 3 * D + D * D + D * 4 * D + 4 * D * D + D * M
    # (P_ng, P_tm, a_g): a_g the share of the attention matmuls whose backward runs (block 0's
    # attention reads nothing trainable when only the adapters train)
    return dict(p_mm=p_mm, all=(first, lora + adapter, 1.0), lora=(first, lora, 1.0),
                adapter=(first_frozen, adapter, (N_LAYER - 1) / N_LAYER))


def test_fedrep_phases_have_their_own_backward_by_hand_and_the_run_matches_the_counter():
    L = _learner(local_scheme="fedrep", fedrep_global_steps=2, align_steps=1, align_prompts=2,
                 align_samples=2)
    h = _hand_token_terms(len(L.tokenizer))
    for g in ("lora", "adapter"):
        pt = L.charged.per_token_by_group[g]
        assert (pt.matmul_weight_params, pt.no_input_grad_params, pt.trainable_matmul_params,
                pt.attn_backward_fraction) == (h["p_mm"], *h[g])
    pt = L.charged.per_token
    assert (pt.no_input_grad_params, pt.trainable_matmul_params, pt.attn_backward_fraction) == h["all"]

    ts, S, P = L.train_spec, L.train_spec.seq_len, L.prompt_len
    T, A = ts.align_max_new_tokens, ts.align_prompts * ts.align_samples

    def fwd(n):
        return 2 * h["p_mm"] + 4 * N_LAYER * n * D

    def bwd(g, n):
        return 2 * (h["p_mm"] - h[g][0]) + 2 * h[g][1] + 8 * h[g][2] * N_LAYER * n * D

    rows = ts.batch_size * S
    gen = A * (P * fwd(P) + sum(fwd(P + i) for i in range(1, T)))
    L_pg = P + T - 1
    want = (ts.local_steps * rows * (fwd(S) + bwd("lora", S)) + 2 * rows * (fwd(S) + bwd("adapter", S))
            + gen + A * L_pg * (fwd(L_pg) + bwd("lora", L_pg)))
    flops, tokens = L.estimate_cost()
    assert flops == pytest.approx(want, rel=1e-12)
    assert tokens == (ts.local_steps + 2) * rows + A * L_pg + A * L_pg

    start = L.initial_state()
    job = TrainJob(client=0, round=0, seed=2, start_state=start, local_scheme="fedrep",
                   prox_anchor={k: start[k] for k in L.group_keys("adapter")})
    counter, measure = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with counter:
        res = L.run(job)
    with measure:
        L.evaluate_metrics(start, 0, 0.5, 0.5)
    assert (res.flops, res.tokens) == (flops, tokens)
    counted = counter.get_total_flops() - measure.get_total_flops()
    # an RLOO step with all-zero advantages runs no policy-gradient pass but is charged one
    ran = flops - res.align_steps_skipped * A * L_pg * (fwd(L_pg) + bwd("lora", L_pg))
    assert abs(ran / counted - 1) < 0.01, (ran, counted, res.align_steps_skipped)


# -------------------------------------------------------------------------------------- Ditto
def test_ditto_global_track_is_fedavg_and_lambda_zero_is_a_plain_local_update(ditto0, joint):
    w = _trained(joint, client=1, seed=3)   # the downloaded global model
    v = _trained(joint, client=0, seed=7)   # the device's personal model
    res = ditto0.run(TrainJob(client=0, round=2, seed=5, start_state=w, prox_anchor=w,
                              local_scheme="ditto", personal_start=v))
    fedavg = joint.run(TrainJob(client=0, round=2, seed=5, start_state=w, prox_anchor=w))
    assert _same(res.state, fedavg.state) and res.train_loss == fedavg.train_loss
    plain = joint.run(TrainJob(client=0, round=2, seed=5, start_state=v))  # no anchor: no pull
    assert _same(res.personal_state, plain.state)
    # the reported metrics are the personal model's
    assert res.eval_loss == ditto0.evaluate(res.personal_state, 0) == plain.eval_loss
    assert res.eval_loss != ditto0.evaluate(res.state, 0)
    assert res.objective == plain.objective
    # a device's first update starts its personal model from the initial state
    first = ditto0.run(TrainJob(client=0, round=2, seed=5, start_state=w, local_scheme="ditto"))
    assert _same(first.personal_state, joint.run(TrainJob(client=0, round=2, seed=5,
                                                          start_state=joint.initial_state())).state)


def test_ditto_large_lambda_pulls_the_personal_model_to_the_global(joint, ditto0):
    """The pull is the exact proximal step after each optimizer step (pwff.prox_form "decoupled"):
    v <- (v' + c w) / (1 + c), c = lr lambda, v' the AdamW step of the loss alone (at most lr per
    coordinate on its first step). So with lambda = 1e6 one step leaves every coordinate within
    (|v - w| + lr) / (1 + c) of w: v lands on the global model."""
    w, v = _trained(joint, client=1, seed=3), _trained(joint, client=0, seed=7)
    L = _learner(local_scheme="ditto", ditto_lambda=1e6, local_steps=1)
    res = L.run(TrainJob(client=0, round=0, seed=5, start_state=w, local_scheme="ditto", personal_start=v))
    lr = L.train_spec.learning_rate
    c = lr * 1e6
    n_checked = 0
    for k in w:
        bound = ((w[k] - v[k]).abs() + lr * 1.001) / (1 + c) + 1e-7
        assert bool(((res.personal_state[k] - w[k]).abs() <= bound).all()), k
        n_checked += int(((w[k] - v[k]).abs() > 1e-3).sum())
    assert n_checked > 1000  # coordinates that really had to move
    # and with the default steps the pull leaves it nearer the global model than lambda = 0 does
    free = ditto0.run(TrainJob(client=0, round=0, seed=5, start_state=w, local_scheme="ditto", personal_start=v))
    pulled = _learner(local_scheme="ditto", ditto_lambda=1e6).run(
        TrainJob(client=0, round=0, seed=5, start_state=w, local_scheme="ditto", personal_start=v))
    assert _dist(pulled.personal_state, w) < 0.8 * _dist(free.personal_state, w)
    assert _dist(pulled.personal_state, w) < _dist(v, w) - 2 * lr


def test_ditto_charges_both_updates_and_measures_once(ditto0, joint):
    (fj, tj), (fd, td) = joint.estimate_cost(), ditto0.estimate_cost()
    assert (fd, td) == (2 * fj, 2 * tj)
    pj, pd = joint.cost_breakdown["flops_by_part"], ditto0.cost_breakdown["flops_by_part"]
    assert pd["train"] == 2 * pj["train"] and (pd["eval"], pd["metrics"]) == (pj["eval"], pj["metrics"])
    res = ditto0.run(TrainJob(client=1, round=0, seed=0, start_state=joint.initial_state(), local_scheme="ditto"))
    assert (res.flops, res.tokens) == (fd, td)


def test_a_job_must_ask_for_the_learners_local_scheme(joint, ditto0):
    start = joint.initial_state()
    with pytest.raises(ValueError, match="local_scheme"):
        joint.run(TrainJob(client=0, round=0, seed=0, start_state=start, local_scheme="ditto"))
    with pytest.raises(ValueError, match="local_scheme"):
        ditto0.run(TrainJob(client=0, round=0, seed=0, start_state=start))
    with pytest.raises(ValueError, match="local_scheme"):
        TrainSpec(local_scheme="fedprox")
    for bad in (dict(fedrep_global_steps=-1), dict(ditto_lambda=-0.1), dict(ditto_lambda=math.inf)):
        with pytest.raises(ValueError):
            TrainSpec(**bad)
    with pytest.raises(ValueError, match="adapter"):
        Learner(ModelSpec(adapter_size=0), DATA, TrainSpec(**TRAIN, local_scheme="fedrep"))


# ------------------------------------------------------------------------------- in the simulator
SIM = ["fl.rounds=1", "devices.count=3", "fl.clients_per_round=2", "pwff.align_steps=0", "pwff.metric_prompts=2",
       "fl.local_steps=2", "fl.batch_size=4", "data.train_samples_per_client=8", "data.eval_samples_per_client=4"]


def _sim(*sets, learner=None):
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    return Simulation(load_scenario(None, overrides=[*SIM, *sets]), learner=learner)


@pytest.fixture(scope="module")
def ran():
    """One-round runs of fedavg-all, ditto, pwff and fedrep (global steps 0) with the real learner."""
    out = {}
    for scheme, extra in (("fedavg-all", ()), ("ditto", ()), ("pwff", ()), ("fedrep", ("pwff.fedrep_global_steps=0",))):
        sim = _sim(f"pwff.scheme='{scheme}'", *extra)
        sim.run()
        out[scheme] = sim
    return out


def test_ditto_in_the_simulator_is_fedavg_plus_personal_models(ran):
    fa, di = ran["fedavg-all"], ran["ditto"]
    assert _same(di.state.global_state, fa.state.global_state)
    assert [r["train_loss"] for r in di.rounds] == [r["train_loss"] for r in fa.rounds]
    assert di.state.payload_bytes() == fa.state.payload_bytes() > 0
    assert di.summary()["bytes_up"] == fa.summary()["bytes_up"]
    assert di.flops == 2 * fa.flops and di.learner.estimate_cost()[0] == di.flops
    trained = sorted(di.state.personal_models)
    assert trained == sorted(r["client"] for r in di.clients) and len(trained) == 2
    assert di.state.personal_state == {k: {} for k in trained}  # nothing personal beside v_k
    L = di.learner
    for row in di.clients:  # the clients rows measure v_k
        assert row["eval_loss"] == L.evaluate(di.state.personal_models[row["client"]], row["client"])
    for row in di.final:  # and so does the final evaluation (the global model if never trained)
        k = row["client"]
        v = di.state.personal_models.get(k, {**di.state.global_state, **di.split.initial_personal})
        assert row["eval_loss"] == L.evaluate(v, k)
    assert len(di.final) == 3


def test_fedrep_in_the_simulator_uploads_pwffs_bytes_and_keeps_its_lora(ran):
    pw, fr = ran["pwff"], ran["fedrep"]
    assert fr.state.payload_bytes() == pw.state.payload_bytes() > 0
    assert fr.global_keys == pw.global_keys and fr.personal_keys == pw.personal_keys
    init = fr.learner.initial_state()
    # no global steps: every upload is the download, so the mean is the initial adapters
    for k in fr.global_keys:
        assert torch.allclose(fr.state.global_state[k], init[k], rtol=0, atol=1e-7), k
    for k, part in fr.state.personal_state.items():
        assert any(not torch.equal(part[key], init[key]) for key in part)
    assert fr.flops == fr.learner.estimate_cost()[0] < pw.flops  # LoRA-only backward, no adapter steps


def test_stub_learner_runs_fedrep_and_is_refused_for_ditto(stub_learner):
    sim = _sim("pwff.scheme='fedrep'", "fl.rounds=2", learner=stub_learner)
    sim.run()
    assert len(stub_learner.jobs) == 4
    with pytest.raises(ValueError, match="ditto"):
        _sim("pwff.scheme='ditto'", learner=stub_learner)


def test_the_learner_must_be_built_for_the_schemes_local_procedure(joint):
    with pytest.raises(ValueError, match="fedrep"):
        _sim("pwff.scheme='fedrep'", learner=joint)
    from pwffsim.scenario import load_scenario

    for bad in ("pwff.fedrep_global_steps=-1", "pwff.ditto_lambda=-1", "pwff.ditto_lambda=inf"):
        with pytest.raises(ValueError):
            load_scenario(None, overrides=[bad])
    with pytest.raises(ValueError, match="adapter"):
        load_scenario(None, overrides=["pwff.scheme='fedrep'", "model.adapter_size=0"])
    ok = load_scenario(None, overrides=["pwff.scheme='ditto'", "model.adapter_size=0"])
    assert ok.pwff.local_scheme == "ditto" and ok.pwff.global_groups == ("adapter", "lora")


def test_network_only_charges_ditto_and_fedrep_as_the_real_learner(ran, tmp_path, monkeypatch):
    from pwffsim.learn.network_only import NetworkOnlyLearner

    monkeypatch.setenv("PWFFSIM_CACHE_DIR", str(tmp_path))
    for scheme in ("ditto", "fedrep"):
        real = ran[scheme]
        extra = ("pwff.fedrep_global_steps=0",) if scheme == "fedrep" else ()
        sim = _sim("learning.mode='none'", f"pwff.scheme='{scheme}'", *extra)
        assert isinstance(sim.learner, NetworkOnlyLearner)
        assert (sim.flops, sim.tokens) == (real.flops, real.tokens)
        assert sim.state.payload_bytes() == real.state.payload_bytes()
        summary = sim.run()
        assert summary["bytes_up"] == real.summary()["bytes_up"]
        if scheme == "ditto":
            assert sorted(sim.state.personal_models) == sorted(r["client"] for r in sim.clients)


def test_process_pool_carries_dittos_personal_models(ran):
    pooled = _sim("pwff.scheme='ditto'", "execution.executor='process'", "execution.workers=1")
    pooled.run()
    here = ran["ditto"]
    assert _same(pooled.state.global_state, here.state.global_state)
    assert pooled.state.personal_models.keys() == here.state.personal_models.keys()
    for k, v in here.state.personal_models.items():
        assert _same(pooled.state.personal_models[k], v)
    assert [r["eval_loss"] for r in pooled.clients] == [r["eval_loss"] for r in here.clients]
