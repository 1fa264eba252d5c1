"""Learning side: aggregation maths, data, the shipped tiny base, local updates and their cost."""
from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pwffsim.learn.aggregate import state_nbytes, weighted_mean
from pwffsim.learn.clients import build_client_datasets
from pwffsim.learn.data import (
    TOPICS, DataSpec, Sample, encode_samples, pretraining_statements, vocabulary,
)
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.pretrain import DEFAULT_BASE_DIR, statement_answer_loss
from pwffsim.learn.tokenizer import build_tokenizer
from pwffsim.learn.train import Learner, TrainJob, TrainSpec

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ aggregation
def _loop_mean(states, weights, key):
    """Independent reference: explicit Python loops over elements, in Python floats."""
    flat = [s[key].detach().double().reshape(-1).tolist() for s in states]
    total = 0.0
    for w in weights:
        total += w
    out = []
    for j in range(len(flat[0])):
        acc = 0.0
        for i in range(len(states)):
            acc += weights[i] * flat[i][j]
        out.append(acc / total)
    return out


def test_weighted_mean_matches_explicit_loops():
    g = torch.Generator().manual_seed(1)
    states = [
        {"a": torch.randn(2, 3, generator=g), "b": torch.randn(4, generator=g).double(),
         "c": torch.randn(5, generator=g).half()}
        for _ in range(3)
    ]
    weights = [1.0, 2.5, 0.5]
    got = weighted_mean(states, weights)
    assert set(got) == {"a", "b", "c"}
    for k, tol in (("a", 1e-6), ("b", 1e-12), ("c", 2e-3)):
        assert got[k].dtype == states[0][k].dtype
        assert got[k].shape == states[0][k].shape
        ref = _loop_mean(states, weights, k)
        for x, r in zip(got[k].double().reshape(-1).tolist(), ref):
            assert abs(x - r) <= tol * max(1.0, abs(r)), (k, x, r)
    # unequal weights matter: the unweighted mean differs
    plain = _loop_mean(states, [1.0, 1.0, 1.0], "b")
    assert max(abs(a - b) for a, b in zip(got["b"].tolist(), plain)) > 1e-3
    # a single state with any positive weight is returned unchanged
    one = weighted_mean(states[:1], [3.0])
    assert torch.equal(one["a"], states[0]["a"])


def test_weighted_mean_rejects_bad_input():
    s1 = {"x": torch.zeros(2), "y": torch.ones(2)}
    s2 = {"x": torch.zeros(2)}
    with pytest.raises(ValueError, match="'y'"):
        weighted_mean([s1, s2], [1, 1])
    with pytest.raises(ValueError):
        weighted_mean([s1, s1], [1, -1])
    with pytest.raises(ValueError):
        weighted_mean([s1, s1], [0, 0])
    with pytest.raises(ValueError):
        weighted_mean([s1, s1], [1])
    with pytest.raises(ValueError):
        weighted_mean([s1, {"x": torch.zeros(3), "y": torch.ones(2)}], [1, 1])


def test_state_nbytes_by_hand():
    state = {"a": torch.zeros(3, 4, dtype=torch.float32), "b": torch.zeros(5, dtype=torch.float16)}
    assert state_nbytes(state) == 3 * 4 * 4 + 5 * 2
    assert state_nbytes({"c": torch.zeros(7, dtype=torch.float64)}) == 56
    assert state_nbytes({}) == 0


# ------------------------------------------------------------------------------ data
def test_tokenizer_closed_vocab_roundtrip(tmp_path):
    tok = build_tokenizer()
    assert len(tok) == len(vocabulary()) + 4
    for t in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id):
        assert t is not None
    # every generated word is in the vocabulary (no <unk>)
    rng = np.random.default_rng(0)
    texts = pretraining_statements(300, seed=3, num_topics=len(TOPICS))
    texts += [t.sample(rng).text for t in TOPICS for _ in range(30)]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2(texts[0])["input_ids"] == tok(texts[0])["input_ids"]
    assert tok2.eos_token_id == tok.eos_token_id and tok2.pad_token_id == tok.pad_token_id


def test_pretraining_corpus_is_not_instruction_format():
    stmts = pretraining_statements(500, seed=1, num_topics=len(TOPICS))
    assert not any("question" in s or "answer" in s for s in stmts)
    assert len({s.split()[1] for s in stmts}) > 3  # several topics


def test_encode_samples_masks_prompt_and_padding():
    tok = build_tokenizer()
    s = Sample("addition", "question : what is 3 plus 4 ? answer :", "7")
    ids, labels = encode_samples([s, s], tok, 16)
    assert ids.shape == labels.shape == (2, 16) and ids.dtype == torch.long
    n_prompt = len(s.prompt.split())
    row = ids[0].tolist()
    assert row[n_prompt] == tok.convert_tokens_to_ids("7")
    assert row[n_prompt + 1] == tok.eos_token_id
    assert all(t == tok.pad_token_id for t in row[n_prompt + 2:])
    lab = labels[0].tolist()
    assert lab[:n_prompt] == [-100] * n_prompt
    assert lab[n_prompt:n_prompt + 2] == row[n_prompt:n_prompt + 2]
    assert lab[n_prompt + 2:] == [-100] * (16 - n_prompt - 2)
    ids8, _ = encode_samples([s], tok, 8)  # truncation
    assert ids8.shape == (1, 8)


def _dominant_share(samples):
    c = Counter(s.topic for s in samples)
    return c.most_common(1)[0][1] / len(samples)


def test_dirichlet_non_iid():
    skew = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=0.05, seed=3))
    flat = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=1000.0, seed=3))
    k = DataSpec(1).num_topics
    for cd in skew + flat:
        assert cd.topic_weights.shape == (k,)
        assert math.isclose(cd.topic_weights.sum(), 1.0, rel_tol=1e-9)
        assert len(cd.train) == 64 and len(cd.eval) == 16
    # alpha = 0.05: most clients are dominated by one topic (E[max weight] ~ 0.87 for 6 topics)
    dominated = sum(cd.topic_weights.max() > 0.6 for cd in skew)
    assert dominated >= 15, [cd.topic_weights.round(2) for cd in skew]
    assert np.mean([cd.topic_weights.max() for cd in skew]) > 0.75
    assert np.median([_dominant_share(cd.train) for cd in skew]) > 0.8
    for cd in flat:
        assert np.all(np.abs(cd.topic_weights - 1 / k) < 0.03)
        assert _dominant_share(cd.train) < 0.45
        assert len({s.topic for s in cd.train}) == k
    # deterministic from the seed; client i independent of the number of clients
    again = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=0.05, seed=3))
    assert all(a.train == b.train and a.eval == b.eval and
               np.array_equal(a.topic_weights, b.topic_weights) for a, b in zip(skew, again))
    fewer = build_client_datasets(DataSpec(num_clients=5, dirichlet_alpha=0.05, seed=3))
    assert fewer[4].train == skew[4].train
    other = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=0.05, seed=4))
    assert any(a.train != b.train for a, b in zip(skew, other))


def test_per_client_training_set_sizes():
    sized = build_client_datasets(DataSpec(num_clients=3, train_samples_per_client=[8, 20, 5]))
    assert [len(cd.train) for cd in sized] == [8, 20, 5]
    assert all(len(cd.eval) == 16 for cd in sized)
    # a client's data depends only on its own count: client 0 with 8 samples is the same either way
    same = build_client_datasets(DataSpec(num_clients=3, train_samples_per_client=8))
    assert sized[0].train == same[0].train and sized[0].eval == same[0].eval
    with pytest.raises(ValueError, match="2 counts for 3 clients"):
        DataSpec(num_clients=3, train_samples_per_client=[8, 8])
    with pytest.raises(ValueError, match=">= 1"):
        DataSpec(num_clients=2, train_samples_per_client=[8, 0])


# ------------------------------------------------------------------------------ base model
@pytest.fixture(scope="module")
def learner30():
    # benign topics only (the first 5): the "borderline" topic's long responses are partly known to
    # the base (its pretraining teaches the answers' words), which would dominate the token-mean
    # loss and hide how far the base is from the question/answer format.
    assert not any("unsafe" in t.tags for t in TOPICS[:5])
    return Learner(ModelSpec(), DataSpec(num_clients=2, num_topics=5),
                   TrainSpec(local_steps=30, eval_batches=2))


@pytest.fixture(scope="module")
def learner():
    return Learner(ModelSpec(), DataSpec(num_clients=3), TrainSpec())


def test_shipped_base_knows_facts_not_format(learner30):
    size = sum(p.stat().st_size for p in DEFAULT_BASE_DIR.iterdir())
    assert size < 2_000_000
    init_eval = learner30.evaluate(learner30.initial_state(), 0)  # loads LoRA B = 0: the base
    assert init_eval > 3.0  # does not know the question/answer format
    per_topic = statement_answer_loss(learner30.model, learner30.tokenizer, n=140)
    assert max(per_topic.values()) < 0.5, per_topic  # but knows the facts


def test_local_update_lowers_loss(learner30):
    state = learner30.initial_state()
    init_eval = learner30.evaluate(state, 0)
    res = learner30.run(TrainJob(client=0, round=0, seed=0, start_state=state))
    assert res.train_loss < 0.7 * init_eval
    assert res.eval_loss < 0.5 * init_eval
    assert res.num_samples == 64
    evals = [res.eval_loss]
    for r in range(1, 4):
        res = learner30.run(TrainJob(client=0, round=r, seed=r, start_state=res.state))
        evals.append(res.eval_loss)
    # falls over the first three updates; the fourth is on the plateau, where 16 eval rows move
    # either way (seeds 0-3, clients 0-1: the 3rd -> 4th step rose in 2 of 8 cases, from 0.46 to
    # 0.70 at most; the first three fell in all 8, the last stayed below 0.5x the first)
    assert evals[0] > evals[1] > evals[2], evals
    assert evals[-1] < 0.6 * evals[0], evals


def _same(a, b):
    return (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))


def _same_float(x, y):
    return x == y or (math.isnan(x) and math.isnan(y))


def test_run_is_deterministic(learner):
    start = learner.initial_state()
    job = TrainJob(client=1, round=2, seed=7, start_state=start)
    r1 = learner.run(job)
    other = learner.run(TrainJob(client=2, round=0, seed=99, start_state=r1.state))
    r2 = learner.run(job)
    assert _same(r1.state, r2.state)
    assert r1.train_loss == r2.train_loss and _same_float(r1.eval_loss, r2.eval_loss)
    assert (r1.client, r1.round, r1.num_samples) == (1, 2, learner.num_samples(1))
    assert not _same(other.state, r1.state)
    r3 = learner.run(TrainJob(client=1, round=2, seed=8, start_state=start))
    assert not _same(r3.state, r1.state)
    assert _same(job.start_state, start)  # the job's tensors are not modified
    for k, v in r1.state.items():
        assert v.device.type == "cpu" and not v.requires_grad


def test_run_is_same_in_another_process(learner, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "state.safetensors"
    code = textwrap.dedent(f"""
        from safetensors.torch import save_file
        from pwffsim.learn.data import DataSpec
        from pwffsim.learn.model import ModelSpec
        from pwffsim.learn.train import Learner, TrainJob, TrainSpec
        L = Learner(ModelSpec(), DataSpec(num_clients=3), TrainSpec())
        r = L.run(TrainJob(client=2, round=0, seed=11, start_state=L.initial_state()))
        save_file(r.state, {str(out)!r})
        print(repr(r.train_loss))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    here = learner.run(TrainJob(client=2, round=0, seed=11, start_state=learner.initial_state()))
    assert _same(load_file(str(out)), here.state)
    assert float(p.stdout.strip().splitlines()[-1]) == here.train_loss


def test_cost_model(learner):
    """Token counts and parameter counts; the FLOPs against FlopCounterMode are in
    test_learn_cost.py."""
    flops, tokens = learner.estimate_cost()
    res = learner.run(TrainJob(client=0, round=0, seed=0, start_state=learner.initial_state()))
    assert res.flops == flops and res.tokens == tokens
    ts = learner.train_spec
    cb = learner.cost_breakdown
    tb = cb["tokens_by_part"]
    assert tb["train"] == ts.local_steps * ts.batch_size * ts.seq_len
    assert tb["eval"] == 2 * ts.eval_batches * ts.batch_size * ts.seq_len  # own + others' rows
    # by default only training and alignment are charged (no alignment here: align_steps = 0)
    assert ts.align_steps == 0 and not ts.charge_measurement
    assert tokens == tb["train"] and flops == cb["flops_by_part"]["train"]
    assert cb["tokens_all"] == sum(tb.values()) > tokens
    pc = learner.param_counts
    adapters = 2 * (64 * 16 + 16 + 16 * 64 + 64)  # 2 blocks: down + bias, up + bias (m = 16)
    assert pc["trainable"] == cb["trainable_params"] == 2 * 8 * (64 + 3 * 64) + adapters
    assert pc["total"] > 10 * pc["trainable"]


def test_no_eval_gives_nan():
    L = Learner(ModelSpec(), DataSpec(num_clients=1, train_samples_per_client=8),
                TrainSpec(local_steps=1, eval_batches=0))
    r = L.run(TrainJob(client=0, round=0, seed=0, start_state=L.initial_state()))
    assert math.isnan(r.eval_loss) and math.isfinite(r.train_loss)
    assert r.tokens == 1 * 8 * 32  # the metric decoding (measurement) is not charged
    assert L.cost_breakdown["tokens_all"] == r.tokens + L.cost_breakdown["tokens_by_part"]["metrics"]


# ------------------------------------------------------------------------------ checkpoints
def test_from_pretrained_local_checkpoint(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                     pad_token_id=tok.pad_token_id)
    base = GPT2LMHeadModel(cfg)
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    L = Learner(ModelSpec(source=str(tmp_path), lora_rank=4),
                DataSpec(num_clients=2, train_samples_per_client=8, eval_samples_per_client=4),
                TrainSpec(local_steps=2, batch_size=4))
    n_base = sum(p.numel() for p in base.parameters())
    assert L.param_counts["trainable"] == 4 * (32 + 3 * 32) + (32 * 16 + 16 + 16 * 32 + 32)
    assert L.param_counts["total"] == n_base + L.param_counts["trainable"]
    r = L.run(TrainJob(client=1, round=0, seed=0, start_state=L.initial_state()))
    assert math.isfinite(r.train_loss) and math.isfinite(r.eval_loss)
    assert r.flops == L.estimate_cost()[0]

    missing = tmp_path / "does-not-exist"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        Learner(ModelSpec(source=str(missing)), DataSpec(num_clients=1), TrainSpec())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        Learner(ModelSpec(source=str(empty)), DataSpec(num_clients=1), TrainSpec())


def test_pretrain_smoke(tmp_path):
    from pwffsim.learn.pretrain import pretrain_tiny_base
    from pwffsim.learn.model import load_base

    out = pretrain_tiny_base(tmp_path / "b", steps=3, batch_size=4, n_statements=200,
                             verbose=False)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    model, tok = load_base(ModelSpec(source=str(out)))
    assert model.config.n_layer == 2 and len(tok) == model.config.vocab_size


# ------------------------------------------------------------------------------ layering
def test_learning_side_does_not_import_simpy():
    code = "import sys, pwffsim.learn.train, pwffsim.learn.aggregate; print('simpy' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_contract_imports_without_torch():
    """The orchestrator's contract with a learner needs no torch (tensors are type hints only)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pwffsim.learn.contract import Learner, TrainJob, TrainResult\n"
            "print(TrainJob(client=0, round=0, seed=0, start_state={}).client)")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "0"
