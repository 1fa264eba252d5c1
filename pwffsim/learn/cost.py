"""The analytic cost of one local update: FLOPs and token positions, counted from the model's shapes.

The simulator turns the *charged* FLOPs into compute time and energy with a device profile; nothing
here is timed. :meth:`pwffsim.learn.train.Learner.estimate_cost` equals what every
:meth:`~pwffsim.learn.train.Learner.run` reports. (The payload of a transfer is the other cost the
simulator needs: :func:`pwffsim.learn.aggregate.state_nbytes` of the state sent.)

The model (FLOPs of the matmuls; a multiply-add is 2 FLOPs)::

    P_mm     = parameters of every matmul weight (Linear/Conv1D incl. LoRA A/B, the adapters'
               down/up projections and lm_head; not embedding lookups, not biases)
    P_ng     = the part of P_mm whose matmul input needs no gradient (it reads the frozen
               embeddings: with LoRA on the attention input, the first block's projection and its
               LoRA A); found by one probe forward that records which inputs require grad
    P_tm     = trainable matmul weights (LoRA A/B, adapter projections; biases excluded: their
               gradient is a sum, not a matmul)
    att(L)   = 4 * n_layer * L * w   per token attending L positions: Q K^T and A V, 2 * L * w
               each (eager attention computes the full L x L scores), w = heads x head_dim the
               attention width (= d_model for GPT-2 and Llama; Gemma-2-2B: 8 x 256 = 2048 < 2304;
               grouped-query k/v heads are repeated to every query head, so w counts query heads)
    fwd(L)   = 2 * P_mm + att(L)                          FLOPs per token (forward)
    a_g      = share of the attention matmuls with an operand that requires grad (their backward
               runs; the same probe forward): 1 unless the first blocks have nothing trainable
               before their attention (e.g. only the adapters train)
    bwd(L)   = 2 * (P_mm - P_ng) + 2 * P_tm + 2 * a_g * att(L)  FLOPs per token (backward: input
               gradients of every matmul that needs them, weight gradients of the trainable ones,
               and both operands' gradients of the attention matmuls that need them)
    S = seq_len, T = align_max_new_tokens, P = fixed (left-padded) prompt length
    gen(N)   = N * (P * fwd(P) + sum_{i=1}^{T-1} fwd(P + i))   N sequences, KV cache: a prefill
               of P tokens then T-1 single-token steps (the T-th token needs no forward)
    pg(N)    = N * (P + T - 1) * (fwd(P + T - 1) + bwd(P + T - 1))   policy-gradient pass
    ref(N)   = N * (P + T - 1) * fwd(P + T - 1)   the frozen reference's forward (KL term)

    parts of one update (local_scheme "joint")                                 charged
    train                 = local_steps * batch_size * S * (fwd(S) + bwd(S))    always
    align_generate        = align_steps * gen(A),  A = align_prompts * align_samples   always
    align_policy_gradient = align_steps * pg(A)                                 always
    align_reference       = align_steps * ref(A)   only with align_kl_coef > 0  always
    eval                  = E * S * fwd(S) * (1 + [num_clients > 1])   with charge_measurement
                            E = eval_batches * batch_size rows, own eval + the others' pool
                            (the personalization gap's pass with the personal part reset,
                            ``TrainJob.personal_reset``, is a measurement never charged: whether
                            a job carries one is the scheme's, not the learner's, to say)
    metrics               = gen(metric_prompts)   greedy metric decoding    with charge_measurement
    tokens                = the token positions of every forward of a part (padding included)

A part that does not run is absent (``align_reference`` with ``align_kl_coef = 0``). An RLOO step
skipped for all-zero advantages (:mod:`pwffsim.learn.align`) is still charged in full: the cost of
an update is fixed before it runs, so it is an upper bound by the skipped steps' policy-gradient
(and, never skipped in practice with ``align_kl_coef > 0``, reference) passes.

Other local procedures (:func:`update_phases`) sum the training and alignment parts over their phases: "ditto"
twice the joint ones (the global model's update, then the personal model's); "fedrep" the
``local_steps`` supervised and ``align_steps`` alignment steps with only LoRA trainable, then
``fedrep_global_steps`` supervised steps with only the adapters trainable, each phase with its own
``bwd``: ``P_tm`` and ``P_ng`` counted with the other group frozen (no weight gradient for a frozen
matmul, and no input gradient where nothing upstream trains). Measurement is counted once.

Training and alignment change the model, so they cost the device simulated time and battery.
Held-out evaluation and metric decoding only *measure* it (a real deployment would not run them on
every device every round): by default (``TrainSpec.charge_measurement = False``) they cost wall
time only, and :meth:`~pwffsim.learn.train.Learner.estimate_cost` and ``TrainResult.flops`` hold
the charged parts alone. Every part stays in ``Learner.cost_breakdown``.

Not counted (negligible or outside the model): the softmax, layer norms, activations and bias adds
(O(L * d) per token, no matmul), the proximal term (O(parameters) per step), the optimizer update,
sampling, and the reward models (the rule rewards are string comparisons; a classifier reward
model's FLOPs are not included). Checked against torch's ``FlopCounterMode`` (which counts the
matmuls) in ``tests/test_learn_cost.py`` and, for Llama/Qwen/Phi-3/Gemma-2 shapes (gated MLPs,
grouped-query k/v, fused projections, tied and untied LM heads), ``tests/test_cost_model.py``.

Every term is read from the modules of the model given, so the same count serves the trained
model and an architecture built on torch's ``meta`` device (:mod:`pwffsim.learn.costmodel`, the
LLM a run is charged for: ``model.cost_model``); the probe forward of ``P_ng`` runs on the
model's own device (on ``meta``, shapes only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainSpec

#: Parts of an update always charged to the device: the work that changes the model
#: (``align_reference`` only exists with ``align_kl_coef > 0``).
TRAINING_PARTS = ("train", "align_generate", "align_policy_gradient", "align_reference")
#: Parts that only measure the model: charged only with ``TrainSpec.charge_measurement``.
MEASUREMENT_PARTS = ("eval", "metrics")


def matmul_modules(model: nn.Module) -> list[nn.Module]:
    """Every matmul module: nn.Linear (incl. LoRA A/B and lm_head) and transformers' Conv1D."""
    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    return [m for m in model.modules() if isinstance(m, kinds)]


def matmul_weight_params(model: nn.Module) -> int:
    """Parameters of every matmul weight (:func:`matmul_modules`); embedding lookups excluded. A
    tied lm_head counts (it is a matmul)."""
    return sum(m.weight.numel() for m in matmul_modules(model))


def trainable_matmul_params(model: nn.Module) -> int:
    """Parameters of the matmul weights that are trained (biases excluded)."""
    return sum(m.weight.numel() for m in matmul_modules(model) if m.weight.requires_grad)


_MATMULS = (torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.bmm)


class _AttentionGrads(TorchFunctionMode):
    """Records, for every matmul of two 4-D operands (eager attention's ``Q K^T`` and ``A V``:
    ``[batch, heads, L, .]``), whether an operand requires grad (its backward then runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: list[bool] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _MATMULS and len(args) >= 2 and all(
                isinstance(a, torch.Tensor) and a.dim() == 4 for a in args[:2]):
            self.flags.append(bool(args[0].requires_grad or args[1].requires_grad))
        return func(*args, **(kwargs or {}))


def _gradient_probe(model: nn.Module) -> tuple[int, float]:
    """``(P_ng, attention backward fraction)``: one forward of two tokens with gradients on records,
    per matmul module, whether its input requires grad, and which attention matmuls have an operand
    that requires grad. The model's mode is restored and no gradient is computed."""
    flags: dict[int, bool] = {}
    device = next(model.parameters()).device

    def record(mod: nn.Module, args: tuple, out) -> None:  # returns None: the output is kept
        flags.setdefault(id(mod), bool(args[0].requires_grad))

    hooks = [m.register_forward_hook(record) for m in matmul_modules(model)]
    was_training = model.training
    model.eval()
    attention = _AttentionGrads()
    try:
        with torch.enable_grad(), attention:
            model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    p_ng = sum(m.weight.numel() for m in matmul_modules(model) if flags.get(id(m)) is False)
    seen = attention.flags
    return int(p_ng), (sum(seen) / len(seen) if seen else 1.0)


def no_input_grad_params(model: nn.Module) -> int:
    """Parameters of the matmul weights whose input needs no gradient in a backward (``P_ng``),
    found by a probe forward (:func:`_gradient_probe`)."""
    return _gradient_probe(model)[0]


def attention_backward_fraction(model: nn.Module) -> float:
    """The share of the attention matmuls whose backward runs (``a_g``): those with an operand that
    requires grad, found by a probe forward (:func:`_gradient_probe`); 1 when something before the
    first block's attention trains (LoRA on its projections), less when the first blocks have
    nothing trainable before their attention (only the adapters train). 1 if no attention matmul
    is seen."""
    return _gradient_probe(model)[1]


def attention_width(config) -> int:
    """Query heads x head dimension of a transformers config (``head_dim`` if it gives one, else
    ``hidden_size // num_attention_heads``)."""
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return heads * int(head_dim)


@dataclass(frozen=True)
class TokenFlops:
    """FLOPs per token of one model (the ``fwd``/``bwd``/``gen`` of the module docstring)."""
    matmul_weight_params: int
    no_input_grad_params: int
    trainable_matmul_params: int
    n_layer: int
    d_model: int
    attn_width: int  # query heads x head_dim
    attn_backward_fraction: float = 1.0  # a_g: share of the attention matmuls whose backward runs

    @classmethod
    def of(cls, model: nn.Module) -> TokenFlops:
        """The per-token FLOPs of ``model`` (a transformers model with ``num_hidden_layers``,
        ``hidden_size`` and ``num_attention_heads`` in its config)."""
        cfg = model.config
        p_ng, a_g = _gradient_probe(model)
        return cls(matmul_weight_params=matmul_weight_params(model), no_input_grad_params=p_ng,
                   trainable_matmul_params=trainable_matmul_params(model),
                   n_layer=int(cfg.num_hidden_layers), d_model=int(cfg.hidden_size),
                   attn_width=attention_width(cfg), attn_backward_fraction=a_g)

    def attention(self, L: int) -> float:
        """Forward FLOPs of the two attention matmuls for one token attending ``L`` positions."""
        return 4.0 * self.n_layer * L * self.attn_width

    def forward(self, L: int) -> float:
        """FLOPs of a forward for one token attending ``L`` positions."""
        return 2.0 * self.matmul_weight_params + self.attention(L)

    def backward(self, L: int) -> float:
        """FLOPs of a backward for one token attending ``L`` positions."""
        return (2.0 * (self.matmul_weight_params - self.no_input_grad_params)
                + 2.0 * self.trainable_matmul_params
                + 2.0 * self.attn_backward_fraction * self.attention(L))

    def generate(self, n: int, prompt_len: int, new_tokens: int) -> tuple[float, int]:
        """``(flops, tokens)`` of generating ``new_tokens`` after ``n`` prompts of ``prompt_len``
        tokens with a KV cache (prefill, then ``new_tokens - 1`` single-token forwards)."""
        P, T = prompt_len, new_tokens
        return (n * (P * self.forward(P) + sum(self.forward(P + i) for i in range(1, T))),
                n * (P + T - 1))


def update_phases(spec: TrainSpec) -> list[tuple[int, int, str | None]]:
    """The phases of one local update under ``spec.local_scheme``: ``(supervised steps, alignment
    steps, the group that trains alone or None for every trainable parameter)``
    (:data:`pwffsim.learn.contract.LOCAL_SCHEMES`): "joint" one phase; "fedrep" the personal LoRA
    (its supervised and alignment steps) then the global adapters (``fedrep_global_steps``); "ditto"
    the joint update twice (the global model, then the personal one)."""
    scheme = getattr(spec, "local_scheme", "joint")
    joint = (spec.local_steps, spec.align_steps, None)
    if scheme == "fedrep":
        return [(spec.local_steps, spec.align_steps, "lora"), (spec.fedrep_global_steps, 0, "adapter")]
    if scheme == "ditto":
        return [joint, joint]
    return [joint]


def _phase_flops(per_token: TokenFlops, by_group, group: str | None) -> TokenFlops:
    if group is None:
        return per_token
    if not by_group or group not in by_group:
        raise ValueError(f"no per-token FLOPs with only {group!r} trainable (the model has no {group} parameters?)")
    return by_group[group]


def update_cost_parts(per_token: TokenFlops, spec: TrainSpec, prompt_len: int,
                      num_clients: int, by_group=None) -> dict[str, tuple[float, int]]:
    """``{part: (flops, tokens)}`` of one local update: ``train``, ``align_generate``,
    ``align_policy_gradient``, ``align_reference`` (only with ``align_kl_coef > 0``), each summed
    over :func:`update_phases` (a phase training one group alone takes its backward from
    ``by_group[group]``, :attr:`~.costmodel.ChargedModel.per_token_by_group`), ``eval`` and
    ``metrics`` (charged or not; measured once per update)."""
    fwd = per_token.forward
    P, T, S = prompt_len, spec.align_max_new_tokens, spec.seq_len
    A = spec.align_prompts * spec.align_samples
    t_eval = spec.eval_batches * spec.batch_size * S * (2 if num_clients > 1 else 1)
    g_align, t_galign = per_token.generate(A, P, T)
    t_pg_step = A * (P + T - 1)
    f_metric, t_metric = per_token.generate(spec.metric_prompts, P, T)
    names = ("train", "align_generate", "align_policy_gradient", "align_reference")
    sums = {name: [0.0, 0] for name in names}
    for steps, align, group in update_phases(spec):
        bwd = _phase_flops(per_token, by_group, group).backward
        t_train = steps * spec.batch_size * S
        for name, (flops, tokens) in zip(names, (
                (t_train * (fwd(S) + bwd(S)), t_train),
                (align * g_align, align * t_galign),
                (align * t_pg_step * (fwd(P + T - 1) + bwd(P + T - 1)), align * t_pg_step),
                (align * t_pg_step * fwd(P + T - 1), align * t_pg_step))):
            sums[name][0] += flops
            sums[name][1] += tokens
    parts = {name: tuple(v) for name, v in sums.items()}
    parts.update(eval=(t_eval * fwd(S), t_eval), metrics=(f_metric, t_metric))
    if not spec.align_kl_coef > 0:
        del parts["align_reference"]
    return parts


def charged_parts(spec: TrainSpec) -> tuple[str, ...]:
    """The parts of an update charged to the device under ``spec`` (see the module docstring)."""
    training = tuple(p for p in TRAINING_PARTS if p != "align_reference" or spec.align_kl_coef > 0)
    return training + (MEASUREMENT_PARTS if spec.charge_measurement else ())


def update_cost(per_token: TokenFlops, spec: TrainSpec, trainable_params: int, prompt_len: int,
                num_clients: int, by_group=None) -> tuple[tuple[float, int], dict]:
    """``((flops, tokens), breakdown)`` of one local update of the model whose per-token FLOPs are
    ``per_token`` (:meth:`TokenFlops.of`) under ``spec``: the charged
    FLOPs and tokens (:func:`charged_parts`). ``breakdown`` holds the per-token FLOPs and their
    terms, ``flops_by_part`` / ``tokens_by_part`` of every part, ``charged_parts``, the charged
    totals ``flops_charged`` / ``tokens_charged`` and the totals of every part ``flops_all`` /
    ``tokens_all``."""
    parts = update_cost_parts(per_token, spec, prompt_len, num_clients, by_group)
    charged = charged_parts(spec)
    S = spec.seq_len
    total = (float(sum(parts[k][0] for k in charged)), int(sum(parts[k][1] for k in charged)))
    breakdown = dict(
        matmul_weight_params=per_token.matmul_weight_params,
        no_input_grad_params=per_token.no_input_grad_params,
        trainable_matmul_params=per_token.trainable_matmul_params,
        trainable_params=trainable_params, n_layer=per_token.n_layer, d_model=per_token.d_model,
        attention_width=per_token.attn_width,
        forward_flops_per_token=per_token.forward(S), backward_flops_per_token=per_token.backward(S),
        prompt_len=prompt_len, train_tokens=parts["train"][1], eval_tokens=parts["eval"][1],
        flops_by_part={k: float(v[0]) for k, v in parts.items()},
        tokens_by_part={k: int(v[1]) for k, v in parts.items()},
        charged_parts=charged, flops_charged=total[0], tokens_charged=total[1],
        flops_all=float(sum(v[0] for v in parts.values())),
        tokens_all=int(sum(v[1] for v in parts.values())))
    return total, breakdown
