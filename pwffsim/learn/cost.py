"""The analytic cost of one local update: FLOPs and token positions, counted from the model's shapes.

The simulator turns these FLOPs into compute time and energy with a device profile; nothing here is
timed. :meth:`pwffsim.learn.train.Learner.estimate_cost` equals what every
:meth:`~pwffsim.learn.train.Learner.run` reports. (The payload of a transfer is the other cost the
simulator needs: :func:`pwffsim.learn.aggregate.state_nbytes` of the state sent.)

The model::

    P_mm     = parameters of every matmul weight (Linear/Conv1D incl. LoRA A/B, the adapters'
               down/up projections and lm_head; not embedding lookups)
    fwd(L)   = 2 * P_mm + 2 * n_layer * L * d_model     FLOPs per token attending L positions
               (Kaplan et al. 2020: 2 FLOPs per weight per token + attention scores and sum)
    bwd(L)   = fwd(L) + 2 * P_trainable                  FLOPs per token (activation gradients cost
               a forward; weight gradients only for the trainable weights)
    S = seq_len, T = align_max_new_tokens, P = fixed (left-padded) prompt length
    gen(N)   = N * (P * fwd(P) + sum_{i=1}^{T-1} fwd(P + i))   N sequences, KV cache: a prefill
               of P tokens then T-1 single-token steps (the T-th token needs no forward)
    pg(N)    = N * (P + T - 1) * (fwd(P + T - 1) + bwd(P + T - 1))   policy-gradient pass
    flops    = local_steps * batch_size * S * (fwd(S) + bwd(S))               supervised
             + align_steps * (gen(A) + pg(A)),  A = align_prompts * align_samples    alignment
             + E * S * fwd(S) * (1 + [num_clients > 1])   E = eval_batches * batch_size rows,
                                                          own eval + eval on the others' pool
             + gen(metric_prompts)                                            greedy metrics
    tokens   = the token positions of every forward above (padding included: it is computed)

Not counted (negligible or outside the model): the proximal term (O(parameters) per step), the
optimizer update, sampling, and the reward models (the rule rewards are string comparisons; a
classifier reward model's FLOPs are not included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainSpec


def matmul_weight_params(model: nn.Module) -> int:
    """Parameters of every matmul weight: nn.Linear (incl. LoRA A/B and lm_head) and transformers'
    Conv1D; embedding lookups excluded. A tied lm_head counts (it is a matmul)."""
    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))


@dataclass(frozen=True)
class TokenFlops:
    """FLOPs per token of one model (the ``fwd``/``bwd``/``gen`` of the module docstring)."""
    matmul_weight_params: int
    trainable_params: int
    n_layer: int
    d_model: int

    def forward(self, L: int) -> float:
        """FLOPs of a forward for one token attending ``L`` positions."""
        return 2.0 * self.matmul_weight_params + 2.0 * self.n_layer * L * self.d_model

    def backward(self, L: int) -> float:
        """FLOPs of a backward for one token attending ``L`` positions."""
        return self.forward(L) + 2.0 * self.trainable_params

    def generate(self, n: int, prompt_len: int, new_tokens: int) -> tuple[float, int]:
        """``(flops, tokens)`` of generating ``new_tokens`` after ``n`` prompts of ``prompt_len``
        tokens with a KV cache (prefill, then ``new_tokens - 1`` single-token forwards)."""
        P, T = prompt_len, new_tokens
        return (n * (P * self.forward(P) + sum(self.forward(P + i) for i in range(1, T))),
                n * (P + T - 1))


def update_cost_parts(per_token: TokenFlops, spec: TrainSpec, prompt_len: int,
                      num_clients: int) -> dict[str, tuple[float, int]]:
    """``{part: (flops, tokens)}`` of one local update: ``train``, ``align_generate``,
    ``align_policy_gradient``, ``eval`` and ``metrics``."""
    fwd, bwd = per_token.forward, per_token.backward
    P, T, S = prompt_len, spec.align_max_new_tokens, spec.seq_len
    A = spec.align_prompts * spec.align_samples
    t_train = spec.local_steps * spec.batch_size * S
    t_eval = spec.eval_batches * spec.batch_size * S * (2 if num_clients > 1 else 1)
    g_align, t_galign = per_token.generate(A, P, T)
    t_pg_step = A * (P + T - 1)
    f_pg_step = t_pg_step * (fwd(P + T - 1) + bwd(P + T - 1))
    f_metric, t_metric = per_token.generate(spec.metric_prompts, P, T)
    return dict(
        train=(t_train * (fwd(S) + bwd(S)), t_train),
        align_generate=(spec.align_steps * g_align, spec.align_steps * t_galign),
        align_policy_gradient=(spec.align_steps * f_pg_step, spec.align_steps * t_pg_step),
        eval=(t_eval * fwd(S), t_eval),
        metrics=(f_metric, t_metric),
    )


def update_cost(model: nn.Module, spec: TrainSpec, trainable_params: int, prompt_len: int,
                num_clients: int) -> tuple[tuple[float, int], dict]:
    """``((flops, tokens), breakdown)`` of one local update of ``model`` (a transformers model with
    ``num_hidden_layers`` and ``hidden_size`` in its config) under ``spec``; ``breakdown`` holds the
    per-token FLOPs, the token counts and ``flops_by_part`` / ``tokens_by_part``."""
    cfg = model.config
    per_token = TokenFlops(matmul_weight_params=matmul_weight_params(model),
                           trainable_params=trainable_params,
                           n_layer=int(cfg.num_hidden_layers), d_model=int(cfg.hidden_size))
    parts = update_cost_parts(per_token, spec, prompt_len, num_clients)
    S = spec.seq_len
    breakdown = dict(
        matmul_weight_params=per_token.matmul_weight_params, trainable_params=trainable_params,
        n_layer=per_token.n_layer, d_model=per_token.d_model,
        forward_flops_per_token=per_token.forward(S), backward_flops_per_token=per_token.backward(S),
        prompt_len=prompt_len, train_tokens=parts["train"][1], eval_tokens=parts["eval"][1],
        flops_by_part={k: float(v[0]) for k, v in parts.items()},
        tokens_by_part={k: int(v[1]) for k, v in parts.items()})
    total = (float(sum(v[0] for v in parts.values())), int(sum(v[1] for v in parts.values())))
    return total, breakdown
