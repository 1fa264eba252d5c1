"""Aggregation maths over named parameter tensors (federated averaging of LoRA/adapter states)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor


def weighted_mean(states: Sequence[Mapping[str, Tensor]],
                  weights: Sequence[float]) -> dict[str, Tensor]:
    """Weighted mean ``sum_i w_i * state_i / sum_i w_i`` of named tensors, key by key.

    Accumulates in float64 and casts back to each tensor's dtype (and device of the first state).
    All states must have the same keys (``ValueError`` lists the missing/extra ones) and shapes;
    weights must be finite, >= 0, with a positive sum (e.g. the clients' sample counts).
    """
    if len(states) == 0:
        raise ValueError("weighted_mean needs at least one state")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    w = [float(x) for x in weights]
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"weights must be finite and >= 0, got {w}")
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {w}")
    keys = list(states[0].keys())
    ref = set(keys)
    for i, s in enumerate(states[1:], start=1):
        ks = set(s.keys())
        if ks != ref:
            missing = sorted(ref - ks)
            extra = sorted(ks - ref)
            raise ValueError(f"state {i} has different keys than state 0: "
                             f"missing {missing}, extra {extra}")
    out: dict[str, Tensor] = {}
    for k in keys:
        t0 = states[0][k]
        acc = torch.zeros(t0.shape, dtype=torch.float64)
        for i, (s, wi) in enumerate(zip(states, w)):
            t = s[k]
            if t.shape != t0.shape:
                raise ValueError(f"key {k!r}: state {i} has shape {tuple(t.shape)}, "
                                 f"state 0 has {tuple(t0.shape)}")
            if wi:
                acc.add_(t.detach().to("cpu", torch.float64), alpha=wi / total)
        out[k] = acc.to(dtype=t0.dtype, device=t0.device)
    return out


def state_nbytes(state: Mapping[str, Tensor]) -> int:
    """Payload size in bytes: sum of ``numel * element_size`` over the tensors (dtype-aware)."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))


def mix(current: Mapping[str, Tensor], update: Mapping[str, Tensor], a: float) -> dict[str, Tensor]:
    """``(1 - a) current + a update``, key by key, in float64, cast back to each tensor's dtype
    (FedAsync's mixing step)."""
    return {k: ((1 - a) * current[k].double() + a * update[k].double()).to(current[k].dtype) for k in current}


def apply_weighted_deltas(current: Mapping[str, Tensor], starts: Sequence[Mapping[str, Tensor]],
                          updates: Sequence[Mapping[str, Tensor]], coefficients: Sequence[float],
                          total: float, step: float) -> dict[str, Tensor]:
    """``current + step * sum_i c_i (update_i - start_i) / total``, key by key, in float64 (FedBuff's
    server step: ``c_i = n_i s(tau_i)``, ``total = sum_i n_i``)."""
    out = {}
    for k in current:
        delta = sum(c * (u[k].double() - s[k].double()) for u, s, c in zip(updates, starts, coefficients))
        out[k] = (current[k].double() + step * delta / total).to(current[k].dtype)
    return out


def momentum_step(current: Mapping[str, Tensor], target: Mapping[str, Tensor],
                  velocity: Mapping[str, Tensor] | None, momentum: float,
                  step: float) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Server momentum (FedAvgM, Hsu et al. 2019): pseudo-gradient ``g = current - target``,
    ``v <- momentum v + g`` (``v = g`` the first time), ``new = current - step v``; float64, cast back.
    Returns ``(new, v)``; ``v`` stays float64."""
    new, vel = {}, {}
    for k in current:
        g = current[k].double() - target[k].double()
        vel[k] = g if velocity is None else momentum * velocity[k] + g
        new[k] = (current[k].double() - step * vel[k]).to(current[k].dtype)
    return new, vel
