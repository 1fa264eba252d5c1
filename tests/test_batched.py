"""Batched multi-client training (execution.batch_clients): Learner.run_many equals Learner.run, job by
job, and the in-process executor batches pending jobs without changing a run's tables."""
import math

import pandas as pd
import pytest
import torch

from pwffsim.learn.batched import client_losses, length_buckets, learner_layout
from pwffsim.learn.contract import TrainJob, TrainResult
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.data import DataSpec
from pwffsim.learn.train import Learner, TrainSpec
from pwffsim.scenario import load_scenario
from pwffsim.sim.builders import build_learner
from pwffsim.sim.engine import Simulation
from pwffsim.sim.executor import InProcessExecutor

TOL = 1e-5  # float32: every parameter of every client's trained state
DATA = DataSpec(num_clients=6, train_samples_per_client=24, eval_samples_per_client=8, seed=3)
FAST = dict(local_steps=3, eval_batches=1, metric_prompts=0, align_steps=0)


def _learner(**train) -> Learner:
    return Learner(ModelSpec(), DATA, TrainSpec(**{**FAST, **train}))


def _jobs(L: Learner, anchored=(True, True, True, True)) -> list[TrainJob]:
    """Four jobs: different clients (one twice), seeds, personal parts (LoRA) and a shared global part
    (adapters, the proximal anchor) that has trained away from its initial value."""
    g = torch.Generator().manual_seed(11)
    init = L.initial_state()
    glob = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in init.items()
            if L.parameter_group(k) == "adapter"}
    jobs = []
    for i, (client, seed) in enumerate([(0, 5), (3, 6), (5, 7), (3, 8)]):
        personal = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in init.items()
                    if L.parameter_group(k) == "lora"}
        jobs.append(TrainJob(client=client, round=1, seed=seed, start_state={**personal, **glob},
                             pref_help=0.2 * i, pref_safe=1 - 0.2 * i,
                             prox_anchor=glob if anchored[i] else None, personal_reset=None))
    return jobs


def _max_diff(a: TrainResult, b: TrainResult) -> float:
    assert a.state.keys() == b.state.keys()
    return max(float((a.state[k] - b.state[k]).abs().max()) for k in a.state)


def _check_equal(seq: list[TrainResult], bat: list[TrainResult]) -> None:
    assert len(seq) == len(bat)
    for a, b in zip(seq, bat):
        assert (a.client, a.round, a.num_samples, a.flops, a.tokens) == (b.client, b.round, b.num_samples, b.flops, b.tokens)
        assert _max_diff(a, b) <= TOL
        for f in ("train_loss", "eval_loss", "eval_loss_others", "objective", "reward_help", "align_reward"):
            x, y = getattr(a, f), getattr(b, f)
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-5, abs=1e-6), f


@pytest.mark.parametrize("train", [
    dict(optimizer="adamw", loss_average="sample", prox_mu=1.0),
    dict(optimizer="sgd", loss_average="token", prox_mu=0.5, prox_form="gradient", batch_size=5),
    dict(optimizer="adamw", loss_average="token", prox_mu=0.0, learning_rate=1e-2),
])
def test_run_many_equals_run_for_each_optimizer(train):
    L = _learner(**train)
    assert learner_layout(L).blocker is None
    jobs = _jobs(L)
    starts = [{k: v.clone() for k, v in j.start_state.items()} for j in jobs]
    bat = L.run_many(jobs)
    seq = [L.run(j) for j in jobs]
    _check_equal(seq, bat)
    assert all(torch.equal(s[k], j.start_state[k]) for s, j in zip(starts, jobs) for k in s)  # never modified
    assert all(_max_diff(r, TrainResult(0, 0, j.start_state, 0, 0, 0, 0, 0)) > 1e-3 for r, j in zip(bat, jobs))


@pytest.mark.parametrize("kl", [0.0, 0.05])
def test_run_many_with_alignment_metrics_and_mixed_anchors(kl):
    """The batched rest: RLOO steps (each client's draws from its own generator; some steps skipped
    for some clients only; with and without the KL term), metrics, personalization gap; jobs with and
    without an anchor form two batches."""
    L = _learner(align_steps=3, align_prompts=2, align_samples=4, metric_prompts=2, prox_mu=1.0,
                 align_kl_coef=kl)
    jobs = _jobs(L, anchored=(True, False, True, False))
    reset = {k: v for k, v in L.initial_state().items() if L.parameter_group(k) == "lora"}
    for j in jobs:
        j.personal_reset = reset
    bat = L.run_many(jobs)
    seq = [L.run(j) for j in jobs]
    _check_equal(seq, bat)
    for a, b in zip(seq, bat):
        assert a.eval_loss_global_only == pytest.approx(b.eval_loss_global_only, rel=1e-5)
        assert a.align_steps_skipped == b.align_steps_skipped
    assert 0 < sum(r.align_steps_skipped for r in seq) < 3 * len(seq)


def test_run_many_equals_run_on_a_llama_checkpoint(tmp_path):
    """Another architecture (a tiny random Llama: RMSNorm, rotary positions, grouped KV heads, peft's
    default q/v targets): batched as well, equal as well."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pwffsim.learn.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    L = Learner(ModelSpec(source=str(tmp_path), lora_rank=4), DATA, TrainSpec(**FAST, batch_size=4))
    layout = learner_layout(L)
    assert layout.blocker is None and len(layout.lora) == 4 and layout.last_mlp is not None
    jobs = _jobs(L)
    _check_equal([L.run(j) for j in jobs], L.run_many(jobs))


@pytest.mark.parametrize("scheme", ["fedrep", "ditto"])
def test_run_many_equals_run_for_fedrep_and_ditto(scheme, monkeypatch):
    """The baselines' procedures batched phase by phase: FedRep's personal then global steps (and
    its RLOO steps on the personal part), Ditto's global track and personal model (from its own
    start, or the initial state) with the pull towards the downloaded state."""
    import pwffsim.learn.batched_schemes as schemes

    L = _learner(local_scheme=scheme, prox_mu=0.5, align_steps=2, align_prompts=2, align_samples=4,
                 metric_prompts=2, fedrep_global_steps=2, ditto_lambda=0.3)
    jobs = _jobs(L)
    for i, j in enumerate(jobs):
        j.local_scheme = scheme
        j.personal_reset = {k: v for k, v in L.initial_state().items() if L.parameter_group(k) == "lora"}
        if scheme == "ditto" and i % 2:
            j.personal_start = {k: v + 0.01 for k, v in j.start_state.items()}
    calls = []
    batched = getattr(schemes, f"{scheme}_many")
    monkeypatch.setattr(schemes, f"{scheme}_many", lambda L, jobs: calls.append(len(jobs)) or batched(L, jobs))
    bat = L.run_many(jobs)
    seq = [L.run(j) for j in jobs]
    assert calls == [4]
    _check_equal(seq, bat)
    for a, b in zip(seq, bat):
        assert a.eval_loss_global_only == pytest.approx(b.eval_loss_global_only, rel=1e-5)
        assert a.align_steps_skipped == b.align_steps_skipped
        if scheme == "ditto":
            assert max(float((a.personal_state[k] - b.personal_state[k]).abs().max()) for k in a.state) <= TOL
        else:
            assert b.personal_state is None


@pytest.mark.parametrize("model, train, why", [
    (ModelSpec(lora_dropout=0.1), dict(), "dropout"),
    (ModelSpec(lora_dropout=0.1), dict(local_scheme="fedrep"), "dropout"),
    (ModelSpec(), dict(local_steps=0), "local_steps"),
])
def test_run_many_falls_back_to_run(model, train, why):
    L = Learner(model, DATA, TrainSpec(**{**FAST, **train}))
    assert why in learner_layout(L).blocker
    jobs = [TrainJob(client=c, round=0, seed=c, start_state=L.initial_state(), local_scheme=L.local_scheme)
            for c in (1, 2)]
    bat = L.run_many(jobs)
    seq = [L.run(j) for j in jobs]
    for a, b in zip(seq, bat):
        assert _max_diff(a, b) == 0.0 and (a.train_loss == b.train_loss or math.isnan(a.train_loss))


@pytest.mark.parametrize("average", ["sample", "token"])
def test_run_many_equals_run_with_rows_without_response_tokens(average):
    """Rows whose prompt fills the row (no response token): a client with some (they weigh nothing)
    and one with only such rows (nan loss, zero gradient, the optimizer still steps), as in run."""
    import dataclasses

    L = _learner(loss_average=average, eval_batches=0)
    for c, n in ((1, 10), (2, 24)):
        b = L.batches[c]
        labels = b.train[1].clone()
        labels[:n] = -100
        L.batches._cache[c] = dataclasses.replace(b, train=(b.train[0], labels))
    jobs = _jobs(L)[:3]
    for j, c in zip(jobs, (0, 1, 2)):
        j.client = c
    seq, bat = [L.run(j) for j in jobs], L.run_many(jobs)
    _check_equal(seq, bat)
    assert math.isnan(seq[2].train_loss) and not math.isnan(seq[1].train_loss)


def test_run_many_raises_run_errors():
    L = _learner()
    good = TrainJob(client=0, round=0, seed=1, start_state=L.initial_state())
    with pytest.raises(ValueError, match="out of range"):
        L.run_many([good, TrainJob(client=99, round=0, seed=1, start_state=L.initial_state())])
    with pytest.raises(ValueError, match="keys differ"):
        L.run_many([good, TrainJob(client=1, round=0, seed=1, start_state={})])


def test_length_buckets_minimise_padded_positions():
    assert length_buckets([16] * 10) == [10]
    assert length_buckets([16] * 10 + [32] * 10, overhead=50) == [10, 20]   # 160 + 320 + 100 < 640 + 50
    assert length_buckets([16] * 10 + [32], overhead=500) == [11]           # one forward of 11 x 32
    assert length_buckets([16, 16, 32, 48, 48], overhead=0) == [2, 3, 5]


def test_client_losses_follow_run_where_a_row_has_no_response():
    ce = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[0, 5, 6, -100], [0, -100, -100, -100], [0, -100, -100, -100], [0, -100, -100, -100]])
    loss, shown = client_losses(ce, labels, K=2, average="sample")
    assert shown[0].item() == pytest.approx(1.5) and math.isnan(shown[1].item())   # client 1: no response token
    loss.sum().backward()
    assert torch.equal(ce.grad[1:], torch.zeros(3, 3))
    assert ce.grad[0, 0].item() == pytest.approx(1.0 / 2)  # first client: one row with a response, 2 tokens


class _Batching:
    """A learner whose run_many records each batch (and can be told to fail)."""

    def __init__(self, fail=False):
        self.batches, self.singles, self.fail = [], [], fail

    def run(self, job):
        self.singles.append(job.client)
        return TrainResult(job.client, job.round, {}, 1, float(job.client), 0.0, 0.0, 0)

    def run_many(self, jobs):
        if self.fail:
            raise ValueError("no")
        self.batches.append([j.client for j in jobs])
        return [TrainResult(j.client, j.round, {}, 1, float(j.client), 0.0, 0.0, 0) for j in jobs]


def _submit(ex, clients):
    return [ex.submit(TrainJob(client=c, round=0, seed=c, start_state={})) for c in clients]


def test_executor_runs_pending_jobs_together():
    L = _Batching()
    ex = InProcessExecutor(L, batch_clients=3)
    h = _submit(ex, range(6))
    assert h[1].cancel() is True
    assert h[4].result().client == 4
    assert L.batches == [[4, 0, 2]]                 # the asked-for job, then the earliest pending ones
    assert h[0].cancel() is False and h[0].result().client == 0   # already run: kept
    assert [x.result().client for x in (h[2], h[3], h[5])] == [2, 3, 5]
    assert L.batches == [[4, 0, 2], [3, 5]]
    with pytest.raises(RuntimeError, match="cancelled"):
        h[1].result()


def test_executor_without_run_many_or_failing_runs_one_job():
    L = _Batching(fail=True)
    h = _submit(InProcessExecutor(L, batch_clients=4), range(3))
    assert h[2].result().client == 2 and L.singles == [2]   # the others stay pending
    assert h[0].result().client == 0 and L.singles == [2, 0]

    class Plain:  # no run_many: lazily, one by one
        run = _Batching.run
        singles = []
    h = _submit(InProcessExecutor(Plain(), batch_clients=4), range(3))
    assert h[1].result().client == 1 and Plain.singles == [1]


def test_batched_run_tables_equal_sequential(tmp_path):
    """A whole run with batch_clients = 3 gives the tables of batch_clients = 1 (up to float noise)."""
    base = ["fl.rounds=2", "devices.count=6", "fl.clients_per_round=4", "pwff.align_steps=1", "pwff.metric_prompts=2"]
    tables, sizes = {}, []
    for k in (1, 3):
        sc = load_scenario(None, overrides=base + [f"execution.batch_clients={k}"])
        learner = build_learner(sc)
        run_many = learner.run_many
        learner.run_many = lambda jobs: sizes.append(len(jobs)) or run_many(jobs)
        out = tmp_path / f"k{k}"
        Simulation(sc, out_dir=str(out), learner=learner).run()
        tables[k] = {t: pd.read_csv(out / f"{t}.csv") for t in ("events", "rounds", "clients")}
    assert sizes and max(sizes) == 3 and len(tables[1]["clients"]) == 8
    for t, a in tables[1].items():
        pd.testing.assert_frame_equal(a, tables[3][t], check_exact=False, rtol=1e-5, atol=1e-7)
