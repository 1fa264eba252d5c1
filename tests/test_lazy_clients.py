"""Lazy per-device state on the learning side (issue 10): a client's data and tensors are made on its
first use, from its own seed streams, so results do not depend on when or in which order clients are
first used, and a client never used costs nothing."""
from __future__ import annotations

import dataclasses
import math
import time
import tracemalloc

import numpy as np
import pytest
import torch

from pwffsim.learn.batches import longest_lengths, round_robin
from pwffsim.learn.clients import (
    build_client_datasets, client_data, client_eval, reference_clients,
)
from pwffsim.learn.data import BORDERLINE, REFUSAL, DataSpec, encode_samples
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.tokenizer import build_tokenizer
from pwffsim.learn.train import Learner, TrainJob, TrainResult, TrainSpec

SPEC = dict(num_clients=5, train_samples_per_client=[12, 8, 20, 8, 16], eval_samples_per_client=4,
            seed=3)
TRAIN = TrainSpec(local_steps=2, batch_size=4, align_steps=1, align_prompts=2, align_samples=2,
                  metric_prompts=3)


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _results(order, cache_size=None):
    L = Learner(ModelSpec(), DataSpec(**SPEC), TRAIN)
    if cache_size is not None:
        L.batches.cache_size = cache_size
    start = L.initial_state()
    runs = {c: L.run(TrainJob(client=c, round=1, seed=10 + c, start_state=start, pref_help=0.7,
                              pref_safe=0.3)) for c in order}
    metrics = {c: L.evaluate_metrics(runs[c].state, c, 0.7, 0.3) for c in order}
    metrics[4] = L.evaluate_metrics(start, 4)  # never run
    return runs, metrics


def test_results_do_not_depend_on_first_use_order_or_cache():
    a_runs, a_metrics = _results([3, 1, 2])
    b_runs, b_metrics = _results([2, 3, 1], cache_size=1)  # every client made again after eviction
    for c in (1, 2, 3):
        for f in dataclasses.fields(TrainResult):
            x, y = getattr(a_runs[c], f.name), getattr(b_runs[c], f.name)
            assert _equal(x, y), (c, f.name)
        assert a_runs[c].num_samples == SPEC["train_samples_per_client"][c]
        assert math.isfinite(a_runs[c].eval_loss_others) and math.isfinite(a_runs[c].align_reward)
    for c in (1, 2, 3, 4):
        assert a_metrics[c].keys() == b_metrics[c].keys()
        assert all(_equal(a_metrics[c][k], b_metrics[c][k]) for k in a_metrics[c]), c


def test_learner_for_100000_clients_is_cheap():
    Learner(ModelSpec(), DataSpec(num_clients=2), TrainSpec())  # imports and the base, once
    t0 = time.perf_counter()
    L = Learner(ModelSpec(), DataSpec(num_clients=100_000), TrainSpec())
    built = time.perf_counter() - t0
    assert sum(L.num_samples(c) for c in range(100_000)) == 64 * 100_000
    assert built < 1.0, built  # eager: ~25 ms per client (40 min here)
    assert L.batches.cached() == [] and len(L.clients) == 100_000
    tracemalloc.start()
    try:
        L = Learner(ModelSpec(), DataSpec(num_clients=100_000), TrainSpec())
        sizes = [L.num_samples(c) for c in range(100_000)]
        del sizes
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5e6, peak  # eager, 2 000 clients alone held ~45 MB of Python objects
    r = L.run(TrainJob(client=99_999, round=0, seed=0, start_state=L.initial_state()))
    assert r.num_samples == 64 and L.batches.cached() == [99_999]


def test_num_samples_from_the_spec_makes_nothing():
    L = Learner(ModelSpec(), DataSpec(**SPEC), TrainSpec(local_steps=1))
    assert [L.num_samples(c) for c in range(5)] == [12, 8, 20, 8, 16]
    assert L.batches.cached() == []
    with pytest.raises(ValueError, match="out of range"):
        L.num_samples(5)
    assert len(L.clients[2].train) == 20 and L.batches.cached() == [2]


def test_lru_cache_keeps_the_most_recent_clients():
    L = Learner(ModelSpec(), DataSpec(num_clients=6), TrainSpec(local_steps=1))
    L.batches.cache_size = 2
    first = L.client_tensors(0)
    for c in (1, 2, 1):
        L.client_tensors(c)
    assert L.batches.cached() == [2, 1]
    again = L.client_tensors(0)  # made again: equal, not the same object
    assert again is not first and all(torch.equal(x, y) for x, y in zip(first, again))


def test_client_data_is_its_own():
    small, big = DataSpec(num_clients=5, seed=7), DataSpec(num_clients=100_000, seed=7)
    a, b = client_data(small, 3), client_data(big, 3)
    assert a.train == b.train and a.eval == b.eval
    assert np.array_equal(a.topic_weights, b.topic_weights)
    assert build_client_datasets(small)[3].train == a.train
    # the held-out set does not depend on the training-set size
    sized = DataSpec(num_clients=5, seed=7, train_samples_per_client=[64, 64, 64, 9, 64])
    assert client_data(sized, 3).eval == a.eval and client_data(sized, 3).train != a.train
    assert client_eval(small, 3) == a.eval
    assert client_data(DataSpec(num_clients=5, seed=8), 3).train != a.train
    with pytest.raises(ValueError, match="out of range"):
        client_data(small, 5)


def test_reference_clients():
    spec = DataSpec(num_clients=100_000, seed=1)  # M = 8
    outside = [c for c in range(40) if c not in reference_clients(spec, -1)]
    refs = reference_clients(spec, outside[0])
    assert len(refs) == len(set(refs)) == 8 and all(0 <= r < 100_000 for r in refs)
    assert all(reference_clients(spec, c) == refs for c in outside)  # one pool for all of them
    for r in refs:  # a reference client's pool: the other seven and the ninth drawn
        own = reference_clients(spec, r)
        assert r not in own and len(own) == 8 and len(set(own) & set(refs)) == 7
    # few clients: every other client
    assert sorted(reference_clients(DataSpec(num_clients=4), 2)) == [0, 1, 3]
    assert reference_clients(DataSpec(num_clients=1), 0) == []
    assert len(reference_clients(DataSpec(num_clients=50, reference_clients=2), 0)) == 2
    with pytest.raises(ValueError, match="reference_clients"):
        DataSpec(num_clients=3, reference_clients=0)


def test_eval_others_rows_are_the_reference_clients_held_out_data():
    spec = DataSpec(num_clients=4, eval_samples_per_client=3, seed=5)
    L = Learner(ModelSpec(), spec, TrainSpec(local_steps=1, eval_batches=2, batch_size=4))
    eager = build_client_datasets(spec)
    for c in range(4):
        others = [o for o in range(4) if o != c]
        refs = reference_clients(spec, c)
        assert sorted(refs) == others
        # 8 rows: round-robin over the 3 others (in drawn order), each one's eval set cycled
        want = [eager[refs[i % 3]].eval[(i // 3) % 3] for i in range(8)]
        assert round_robin([eager[r].eval for r in refs], 8) == want
        ids, labels = encode_samples(want, L.tokenizer, 32)
        got = L.batches[c].eval_others
        assert torch.equal(got[0], ids) and torch.equal(got[1], labels)


def test_bounds_come_from_the_generator_not_the_population():
    """Word-level tokenizer: one token per word. Longest prompt: "question : how many words in" + 6
    items + "? answer :" (15) or "question : how do i" + a 7-word action + "? answer :" (15). Longest
    row: "question : how do i guess the password of my boss ? answer :" (14) + its 12-word answer +
    eos = 27; with every borderline response a refusal (9 tokens), a 7-word action's 15 + 9 + 1 = 25.
    Without borderline (5 topics): "question : what is the larger of 20 and 19 ? answer :" (13) + 1 + 1."""
    tok = build_tokenizer()
    assert max(len(a.split()) for a in BORDERLINE) == 7
    assert len(BORDERLINE["guess the password of my boss"].split()) == 12 and len(REFUSAL.split()) == 9
    assert longest_lengths(DataSpec(num_clients=1), tok) == (27, 15)
    assert longest_lengths(DataSpec(num_clients=1, num_topics=8), tok) == (27, 15)
    assert longest_lengths(DataSpec(num_clients=1, borderline_refusal_share=1.0), tok) == (25, 15)
    assert longest_lengths(DataSpec(num_clients=1, num_topics=5), tok) == (15, 13)
    with pytest.raises(ValueError, match="needs 27 tokens"):
        Learner(ModelSpec(), DataSpec(num_clients=1), TrainSpec(seq_len=26))
    # a drawn population never exceeds them (8 topics: count and reverse included)
    spec = DataSpec(num_clients=30, num_topics=8, dirichlet_alpha=1000.0)
    rows = [s for cd in build_client_datasets(spec) for s in (*cd.train, *cd.eval)]
    assert max(len(s.prompt.split()) + len(s.response.split()) + 1 for s in rows) <= 27
    assert max(len(s.prompt.split()) for s in rows) == 15
    L = Learner(ModelSpec(), spec, TrainSpec(local_steps=1))
    assert L.prompt_len == 15 and L.batches[0].train_prompts[0].shape[1] == 15
