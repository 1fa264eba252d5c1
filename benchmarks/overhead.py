"""Overhead of the co-simulation over the bare training compute (a benchmark, not a test).

Runs the built-in default scenario (alignment and proximal term off: the bare loop has only plain
supervised steps) through
the whole simulator (SimPy network, executor, trace writer), counts the local updates it trained, then
runs the same number of local updates (same model, same LoRA and adapters, same steps, batch and
sequence length) in a bare PyTorch loop, and prints

    ratio = wall time of the simulator run / wall time of the bare loop

Both are measured in this one process, alternately, ``--repeats`` times; the minimum of each is used.
Target: ratio <= 1.10.

    python benchmarks/overhead.py [--rounds N] [--repeats R] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch


def bare_loop(learner, n_updates: int) -> float:
    """n_updates local updates of local_steps optimiser steps each, nothing else."""
    model = learner.model
    spec = learner.train_spec
    ids, labels = learner.client_tensors(0)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n_updates):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=spec.learning_rate)
        model.train()
        for _ in range(spec.local_steps):
            idx = torch.randint(0, ids.shape[0], (spec.batch_size,), generator=g)
            out = model(input_ids=ids[idx], labels=labels[idx])
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def time_sim(sc, learner) -> tuple[float, int]:
    from pwffsim.sim.engine import Simulation

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = Simulation(sc, out_dir=tmp, learner=learner)
        sim.run()
        dt = time.perf_counter() - t0
    return dt, sum(1 for c in sim.clients if c["train_loss"] == c["train_loss"])  # trained (not NaN)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    from pwffsim.scenario import load_scenario
    from pwffsim.sim.builders import build_learner

    # Alignment off: the bare loop has only the supervised steps to compare with.
    sc = load_scenario(None, overrides=[f"fl.rounds={args.rounds}", "pwff.align_steps=0", "pwff.prox_mu=0", *args.set])
    sc_noeval = load_scenario(None, overrides=[f"fl.rounds={args.rounds}", "pwff.align_steps=0", "pwff.prox_mu=0", "fl.eval_batches=0",
                                               "pwff.metric_prompts=0", *args.set])
    learner = build_learner(sc)
    learner_noeval = build_learner(sc_noeval)
    t_sim, t_noeval, t_bare = [], [], []
    n_updates = 0
    for _ in range(args.repeats):  # interleaved, so that machine load hits all three alike
        dt, n_updates = time_sim(sc, learner)
        t_sim.append(dt)
        t_noeval.append(time_sim(sc_noeval, learner_noeval)[0])
        t_bare.append(bare_loop(learner, n_updates))
    ts, tn, tb = min(t_sim), min(t_noeval), min(t_bare)
    print(f"scenario: built-in default, rounds={args.rounds}, local updates trained={n_updates}, "
          f"steps/update={sc.fl.local_steps}, batch={sc.fl.batch_size}, seq_len={sc.fl.seq_len}")
    print(f"bare training loop                : {tb:7.3f} s")
    print(f"simulator, metrics on (default)   : {ts:7.3f} s   ratio {ts / tb:.3f}  "
          f"(eval_batches={sc.fl.eval_batches}, metric_prompts={sc.pwff.metric_prompts}, final evaluation)")
    print(f"simulator, metrics off            : {tn:7.3f} s   ratio {tn / tb:.3f}  (target <= 1.10)")
    print(f"(min of {args.repeats} interleaved repeats each)")


if __name__ == "__main__":
    main()
