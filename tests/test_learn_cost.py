"""The analytic FLOP count of a local update against torch's FlopCounterMode (eager attention, both
attention matmuls and their backward), and which parts of it the devices are charged for."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pwffsim.learn.align import ResponseSampler
from pwffsim.learn.cost import TokenFlops
from pwffsim.learn.data import DataSpec
from pwffsim.learn.model import ModelSpec
from pwffsim.learn.train import Learner, TrainJob, TrainSpec

# The analytic count against FlopCounterMode: equal today; 1% (tighter than the 3% asked for) so
# that counting only one of the two attention matmuls fails at seq_len 16 too (2.4% off there).
TOL = 0.01
# The shipped tiny base: 2 blocks, d = 64; LoRA r = 8 on c_attn; adapters m = 16 (ModelSpec defaults).
N_LAYER, D, R, M = 2, 64, 8, 16
SMALL_DATA = dict(num_clients=3, train_samples_per_client=8, eval_samples_per_client=4)
SMALL_TRAIN = dict(local_steps=2, batch_size=4, align_steps=1, align_prompts=2, align_samples=2,
                   metric_prompts=2)


@pytest.fixture(scope="module")
def small():
    return Learner(ModelSpec(), DataSpec(**SMALL_DATA), TrainSpec(**SMALL_TRAIN))


def _counted(model, fn) -> tuple[int, int]:
    """``(total FLOPs, FLOPs of aten.bmm)`` FlopCounterMode counts while ``fn`` runs (the attention
    matmuls are the only bmm of the eager GPT-2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops(), counter.get_flop_counts()["Global"].get(torch.ops.aten.bmm, 0)


def _hand_token_flops(vocab: int) -> dict:
    """The per-token terms of the shipped tiny base, from its shapes (see pwffsim.learn.cost)."""
    block = D * 3 * D + D * D + D * 4 * D + 4 * D * D          # c_attn, attn c_proj, c_fc, mlp c_proj
    trainable_mm = N_LAYER * (R * D + R * 3 * D + 2 * D * M)    # LoRA A/B, adapter down/up weights
    p_mm = N_LAYER * block + trainable_mm + vocab * D           # + lm_head (tied to the embedding)
    p_ng = D * 3 * D + R * D  # the first block's c_attn and its LoRA A read the frozen embeddings
    return dict(p_mm=p_mm, p_ng=p_ng, p_tm=trainable_mm)


def _fwd(h: dict, L: int) -> float:
    return 2 * h["p_mm"] + 2 * 2 * N_LAYER * L * D            # matmuls + Q K^T and A V


def _bwd(h: dict, L: int) -> float:
    return 2 * (h["p_mm"] - h["p_ng"]) + 2 * h["p_tm"] + 2 * 4 * N_LAYER * L * D


def _gen(h: dict, n: int, P: int, T: int) -> float:
    return n * (P * _fwd(h, P) + sum(_fwd(h, P + i) for i in range(1, T)))


def test_model_runs_eager_attention_and_per_token_terms_by_hand(small):
    assert small.model.config._attn_implementation == "eager"
    cb, h = small.cost_breakdown, _hand_token_flops(len(small.tokenizer))
    assert (cb["matmul_weight_params"], cb["no_input_grad_params"],
            cb["trainable_matmul_params"]) == (h["p_mm"], h["p_ng"], h["p_tm"])
    # the trainable parameters are the matmul weights plus the adapters' biases
    assert cb["trainable_params"] == h["p_tm"] + N_LAYER * (M + D)
    S = small.train_spec.seq_len
    assert cb["forward_flops_per_token"] == _fwd(h, S)
    assert cb["backward_flops_per_token"] == _bwd(h, S)


@pytest.mark.parametrize("seq_len", [16, 32, 64])
def test_analytic_flops_match_flop_counter_with_attention(small, seq_len):
    model, per_token, B = small.model, TokenFlops.of(small.model), 2
    ids = torch.randint(4, len(small.tokenizer), (B, seq_len),
                        generator=torch.Generator().manual_seed(seq_len))
    model.train()
    train, train_bmm = _counted(model, lambda: model(input_ids=ids, labels=ids).loss.backward())
    model.eval()
    with torch.no_grad():
        ev, _ = _counted(model, lambda: model(input_ids=ids))
    # greedy generation after left-padded prompts (KV cache), as the metrics and alignment decode
    P, T = seq_len // 2, 4
    mask = torch.ones((B, P), dtype=torch.long)
    mask[0, :3] = 0
    sampler = ResponseSampler(model, small.tokenizer, small.batches.eos, T)
    gen, gen_bmm = _counted(model, lambda: sampler.generate(ids[:, :P], mask, None))
    # attention is visible to the counter and large enough that leaving it out would fail at 3%
    assert train_bmm > TOL * train and gen_bmm > 0
    for ours, counted in ((B * seq_len * (per_token.forward(seq_len) + per_token.backward(seq_len)),
                           train),
                          (B * seq_len * per_token.forward(seq_len), ev),
                          (per_token.generate(B, P, T)[0], gen)):
        assert abs(ours / counted - 1) < TOL, (seq_len, ours, counted)


def test_a_whole_update_matches_the_counter_part_by_part(small):
    """Training + alignment (a run minus its measurement) and the measurement (evaluate_metrics runs
    exactly the run's eval and metric decoding) against the counter."""
    start = small.initial_state()
    job = TrainJob(client=1, round=0, seed=3, start_state=start,
                   prox_anchor={k: start[k] for k in small.group_keys("adapter")})
    out = {}
    run, _ = _counted(small.model, lambda: out.setdefault("res", small.run(job)))
    measure, _ = _counted(small.model, lambda: small.evaluate_metrics(start, 1, 0.5, 0.5))
    parts = small.cost_breakdown["flops_by_part"]
    charged = small.estimate_cost()[0]
    # an RLOO step skipped for all-zero advantages is charged but runs no policy-gradient pass
    skipped = out["res"].align_steps_skipped * parts["align_policy_gradient"] / small.train_spec.align_steps
    assert abs((charged - skipped) / (run - measure) - 1) < TOL, (charged, skipped, run - measure)
    assert abs((parts["eval"] + parts["metrics"]) / measure - 1) < TOL


def _hand_parts(L: Learner) -> dict[str, tuple[float, int]]:
    """``{part: (flops, tokens)}`` of one update from the spec and the hand per-token terms."""
    ts, h, P = L.train_spec, _hand_token_flops(len(L.tokenizer)), L.prompt_len
    S, T, A = ts.seq_len, ts.align_max_new_tokens, ts.align_prompts * ts.align_samples
    t_train, t_eval = ts.local_steps * ts.batch_size * S, 2 * ts.eval_batches * ts.batch_size * S
    t_gen = P + T - 1  # tokens of one generation: the prefill, then T - 1 single-token forwards
    return dict(
        train=(t_train * (_fwd(h, S) + _bwd(h, S)), t_train),
        align=(ts.align_steps * (_gen(h, A, P, T) + A * t_gen * (_fwd(h, t_gen) + _bwd(h, t_gen))),
               ts.align_steps * 2 * A * t_gen),
        eval=(t_eval * _fwd(h, S), t_eval),
        metrics=(_gen(h, ts.metric_prompts, P, T), ts.metric_prompts * t_gen))


def test_measurement_is_charged_only_on_request(small):
    charging = Learner(ModelSpec(), DataSpec(**SMALL_DATA),
                       TrainSpec(**SMALL_TRAIN, charge_measurement=True))
    hand = _hand_parts(small)
    assert _hand_parts(charging) == hand
    off = (hand["train"][0] + hand["align"][0], hand["train"][1] + hand["align"][1])
    on = (off[0] + hand["eval"][0] + hand["metrics"][0],
          off[1] + hand["eval"][1] + hand["metrics"][1])
    assert hand["eval"][0] > 0.05 * on[0] and hand["metrics"][0] > 0.01 * on[0]
    for L, want in ((small, off), (charging, on)):
        flops, tokens = L.estimate_cost()
        assert flops == pytest.approx(want[0], rel=1e-12) and tokens == want[1]
        res = L.run(TrainJob(client=0, round=0, seed=1, start_state=L.initial_state()))
        assert (res.flops, res.tokens) == (flops, tokens)
        # the breakdown keeps every part, charged or not
        cb = L.cost_breakdown
        assert cb["flops_all"] == pytest.approx(on[0], rel=1e-12) and cb["tokens_all"] == on[1]
        assert cb["flops_charged"] == flops
    assert small.cost_breakdown["charged_parts"] == ("train", "align_generate",
                                                     "align_policy_gradient")
    assert charging.cost_breakdown["charged_parts"][-2:] == ("eval", "metrics")


def _compute_events(charge: bool):
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sc = load_scenario(None, overrides=[
        "fl.rounds=1", "devices.count=3", "fl.clients_per_round=2", "fl.local_steps=1",
        "data.train_samples_per_client=8", "pwff.align_steps=0", "pwff.metric_prompts=2",
        f"fl.charge_measurement={'true' if charge else 'false'}"])
    sim = Simulation(sc)
    sim.run()
    events = [e for e in sim.events if e["kind"] == "compute"]
    assert len(events) == 2 and all(e["status"] == "ok" for e in events)
    return sim, events


def test_compute_events_follow_the_charged_flops():
    """End to end: a compute event lasts charged FLOPs / device FLOP/s and draws
    kappa * (FLOPs / FLOPs-per-cycle) * f^2; charging measurement makes it longer by exactly the
    measurement's FLOPs."""
    durations = {}
    for charge in (False, True):
        sim, events = _compute_events(charge)
        cb = sim.learner.cost_breakdown
        parts = ("train", "align_generate", "align_policy_gradient") + (
            ("eval", "metrics") if charge else ())
        flops = sum(cb["flops_by_part"][k] for k in parts)
        assert sim.learner.estimate_cost()[0] == pytest.approx(flops, rel=1e-12)
        for e in events:
            prof = sim.devices[e["client"]].profile
            assert e["t_end_s"] - e["t_start_s"] == pytest.approx(flops / prof.flops_per_s, rel=1e-9)
            assert e["energy_j"] == pytest.approx(
                prof.kappa * flops / prof.flops_per_cycle * prof.cpu_hz ** 2, rel=1e-9)
        durations[charge] = {e["client"]: e["t_end_s"] - e["t_start_s"] for e in events}
        measurement = cb["flops_by_part"]["eval"] + cb["flops_by_part"]["metrics"]
    common = durations[False].keys() & durations[True].keys()  # same seed: same selection
    assert common
    for k in common:
        fps = sim.devices[k].profile.flops_per_s
        assert durations[True][k] - durations[False][k] == pytest.approx(measurement / fps,
                                                                         rel=1e-9)
