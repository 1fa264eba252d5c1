"""Batched multi-client training against sequential peft training (a benchmark, not a test).

Workload: ``K`` local updates of the built-in default scenario's model (``builtin-tiny``, the default
LoRA and adapters) with the default ``local_steps``, ``batch_size`` and ``seq_len``; supervised steps
only (``pwff.align_steps=0``, metrics off: ``fl.eval_batches=0``, ``pwff.metric_prompts=0``; no
proximal term), ``K`` different clients (``devices.count`` = the largest ``K``), each from the initial
state with its own seed. Sequential: ``Learner.run`` per job (what ``execution.batch_clients = 1``
does); batched: one ``Learner.run_many`` of the ``K`` jobs (``batch_clients = K``). Both in this one
process, interleaved, ``--repeats`` times; the minimum of each is used. Prints client-updates per
second, the ratio batched / sequential and the largest difference between the two runs' trained
parameters. Target: ratio >= 3 at 32 clients.

``--ablation`` also times the batched supervised steps without their two savings (rows cut after
their last response token, in length buckets; the LM head at the response positions only), to show
what the batching of the base forward alone gives.

    python benchmarks/batched.py [--clients 1 8 32] [--repeats 3] [--ablation] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import time

import torch


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _max_diff(a, b) -> float:
    return max(float((x.state[k] - y.state[k]).abs().max()) for x, y in zip(a, b) for k in x.state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    from pwffsim.learn.batched import supervised_many
    from pwffsim.learn.contract import TrainJob
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.builders import build_learner

    sc = load_scenario(None, overrides=["pwff.align_steps=0", "pwff.metric_prompts=0", "fl.eval_batches=0",
                                        "pwff.prox_mu=0", f"devices.count={max(args.clients)}", *args.set])
    L = build_learner(sc)
    start = L.initial_state()
    jobs = {K: [TrainJob(client=c, round=0, seed=1000 + c, start_state=start) for c in range(K)]
            for K in args.clients}
    for K in args.clients:  # warm-up: every client's tensors made, first-call costs paid
        L.run_many(jobs[K])
    seq = {K: [] for K in args.clients}
    bat = {K: [] for K in args.clients}
    plain, cut, diff = [], [], {}
    Kmax = max(args.clients)
    for _ in range(args.repeats):  # interleaved, so that machine load hits both alike
        for K in args.clients:
            dt, a = _timed(lambda: [L.run(j) for j in jobs[K]])
            seq[K].append(dt)
            dt, b = _timed(lambda: L.run_many(jobs[K]))
            bat[K].append(dt)
            diff[K] = _max_diff(a, b)
        if args.ablation:
            gens = lambda: [torch.Generator().manual_seed(j.seed) for j in jobs[Kmax]]  # noqa: E731
            plain.append(_timed(lambda: supervised_many(L, jobs[Kmax], gens(), buckets=False, select=False))[0])
            cut.append(_timed(lambda: supervised_many(L, jobs[Kmax], gens()))[0])
    ts = sc.fl
    print(f"workload: builtin model {sc.model.source}, LoRA r={sc.model.lora_rank}, adapters {sc.model.adapter_size}, "
          f"local_steps={ts.local_steps}, batch_size={ts.batch_size}, seq_len={ts.seq_len}, optimizer={ts.optimizer}; "
          f"supervised steps only; min of {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    print("| clients K | sequential updates/s | batched updates/s | ratio | max abs param diff |")
    print("|---|---|---|---|---|")
    for K in args.clients:
        s, b = K / min(seq[K]), K / min(bat[K])
        print(f"| {K} | {s:.1f} | {b:.1f} | {b / s:.2f} | {diff[K]:.1e} |")
    if args.ablation:
        print(f"ablation at K={Kmax}, supervised steps only: full rows and every logit {min(plain):.3f} s, "
              f"cut rows and response logits {min(cut):.3f} s (x{min(plain) / min(cut):.2f}); "
              f"sequential {min(seq[Kmax]):.3f} s")


if __name__ == "__main__":
    main()
