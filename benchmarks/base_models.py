"""The shipped base models side by side: sizes, what pretraining taught, the wall of a local update.

For each of ``builtin-tiny`` and ``builtin-small`` (:mod:`pwffsim.learn.bases`)::

    python benchmarks/base_models.py              # 3 timed local updates per base, interleaved
    python benchmarks/base_models.py --repeats 5

Columns: base parameters, LoRA and adapter parameters at the default rank 8 / adapter size 16, the
recorded pretraining (steps, wall, steps/s, last-50 LM loss, from ``pretrain_stats.json``), the
statement answer loss re-measured on the shipped weights (mean over the 8 topics, nats), and the wall
of one default local update (the default scenario's learner specs: 5 supervised steps of batch 8 x
32 tokens, 2 RLOO steps of 8 prompts x 4 samples x 14 new tokens, the held-out eval and 8 greedy
metric prompts; one torch thread, as the simulator runs it). The updates of the two bases are
interleaved (tiny, small, tiny, ...) so a change in the machine's load hits both alike; the median
is printed with the minimum and maximum.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def learner_for(source: str):
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.builders import learner_specs
    from pwffsim.learn.train import Learner

    sc = load_scenario(None, overrides=[f"model.source='{source}'"], seed=0)
    m, d, t = learner_specs(sc)
    return Learner(m, d, t)


def timed_update(learner, seed: int) -> float:
    from pwffsim.learn.train import TrainJob

    job = TrainJob(client=seed % learner.num_clients, round=seed, seed=seed, start_state=learner.initial_state())
    t0 = time.perf_counter()
    learner.run(job)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    from pwffsim.learn.bases import BUILTIN_BASES, builtin_dir
    from pwffsim.learn.model import ModelSpec, load_base
    from pwffsim.learn.pretrain import statement_answer_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    learners = {name: learner_for(name) for name in BUILTIN_BASES}
    for lr in learners.values():
        timed_update(lr, 99)  # warm-up: first-use data, allocator
    walls = {name: [] for name in learners}
    for r in range(a.repeats):
        for name, lr in learners.items():
            walls[name].append(timed_update(lr, r))
    for name, lr in learners.items():
        stats = json.loads((builtin_dir(name) / "pretrain_stats.json").read_text())
        base, tok = load_base(ModelSpec(source=name))  # the shipped weights, untouched
        loss = statement_answer_loss(base, tok, n=256)
        c, w = lr.param_counts, walls[name]
        print(f"{name}: base {c['total'] - c['trainable']:,} parameters, LoRA {c['lora']:,}, adapters "
              f"{c['adapter']:,}; pretraining {stats['steps']} steps in {stats['wall_time_s']:.0f} s "
              f"({stats.get('steps_per_s', stats['steps'] / stats['wall_time_s']):.2f} steps/s), last-50 LM loss "
              f"{stats['final_loss_mean_last_50']:.3f}; statement answer loss {np.mean(list(loss.values())):.4f} "
              f"nats; local update {statistics.median(w):.2f} s (min {min(w):.2f}, max {max(w):.2f}, "
              f"{len(w)} runs)")


if __name__ == "__main__":
    main()
