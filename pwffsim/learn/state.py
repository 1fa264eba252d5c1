"""The trainable state of a peft model: which parameters train, their groups, loading and copying.

The state is one dict: LoRA keys as peft names them in its state dict (``...c_attn.lora_A.weight``),
adapter keys their parameter names (``...mlp.adapter.down.weight``). Each key belongs to a group,
``"lora"`` or ``"adapter"``; the caller decides which group is global (aggregated) or personal.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

#: Parameter groups of the trainable state (see :meth:`TrainableState.parameter_group`).
GROUPS = ("lora", "adapter")


#: ``TrainSpec.prox_form`` choices (see :class:`ProximalTerm`).
PROX_FORMS = ("decoupled", "gradient")


class ProximalTerm:
    """The proximal term ``mu/2 * sum_k ||theta_k - anchor_k||^2`` over ``[(theta_k, anchor_k)]``
    pairs, in one of two forms (``TrainSpec.prox_form``):

    * ``"decoupled"`` (default): not in the loss; after every optimizer step (:meth:`after_step`)
      each ``theta_k`` takes the exact proximal step of the term with step size ``lr``,
      ``theta <- argmin_u mu/2 ||u - anchor||^2 + 1/(2 lr) ||u - theta||^2
      = (theta + lr*mu*anchor) / (1 + lr*mu)``: a pull of the fraction ``lr*mu / (1 + lr*mu)`` of
      the way to the anchor, whatever the optimizer, stable for any ``mu`` (computed as
      ``theta - lr*mu/(1 + lr*mu) * (theta - anchor)``).
    * ``"gradient"``: the term is added to the loss (:meth:`loss_term`) and its gradient
      ``mu (theta - anchor)`` goes through the optimizer. Under AdamW the per-coordinate
      normalisation makes ``mu`` no coefficient: where the loss gives no gradient, the term alone
      makes a full ``lr``-sized step whatever ``mu`` is. Under plain SGD the two forms agree to
      first order in ``lr*mu``.

    Calling it gives the term's value (a tensor in the autograd graph), or ``0.0`` if there are no
    pairs. Falsy when empty (mu = 0 or no anchor)."""

    def __init__(self, pairs: list[tuple[Tensor, Tensor]], mu: float, form: str = "decoupled"):
        if form not in PROX_FORMS:
            raise ValueError(f"unknown prox_form {form!r}; expected one of {PROX_FORMS}")
        self.pairs, self.mu, self.form = pairs, mu, form

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __call__(self) -> Tensor | float:
        if not self.pairs:
            return 0.0
        return 0.5 * self.mu * sum(((p - a) ** 2).sum() for p, a in self.pairs)

    @property
    def in_loss(self) -> bool:
        """Whether the term goes into the loss: the ``"gradient"`` form with pairs."""
        return self.form == "gradient" and bool(self.pairs)

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        """After an optimizer step at learning rate ``lr``: the proximal step (``"decoupled"``;
        nothing in the ``"gradient"`` form or without pairs)."""
        if self.form != "decoupled" or not self.pairs:
            return
        c = lr * self.mu
        pull = c / (1.0 + c)
        for p, a in self.pairs:
            p.sub_(p - a, alpha=pull)


@contextlib.contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Inside the block, ``params`` do not require grad (no weight gradient is computed for them,
    nor an input gradient that only they would need); those that did are restored after."""
    off = [p for p in params if p.requires_grad]
    for p in off:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in off:
            p.requires_grad_(True)


def _trainable_parameters(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, str]]:
    """``({key: parameter}, {key: group})`` of every trainable parameter of a peft model, in model
    order. Raises if a trainable parameter is neither LoRA nor an adapter, or peft's state dict has
    a LoRA key without a trainable parameter."""
    from peft import get_peft_model_state_dict

    lora_keys = set(get_peft_model_state_dict(model))
    adapter = getattr(model, "active_adapter", "default")
    params: dict[str, nn.Parameter] = {}
    group: dict[str, str] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = name.replace(f".{adapter}.", ".")
        if key in lora_keys:
            group[key] = "lora"
        elif ".adapter." in name:
            key = name
            group[key] = "adapter"
        else:
            raise ValueError(f"trainable parameter {name!r} is neither LoRA nor an adapter")
        params[key] = p
    if not lora_keys <= set(params):
        raise ValueError(f"trainable parameters do not match peft's state dict: "
                         f"{sorted(lora_keys - set(params))[:4]}")
    return params, group


def _check_shape(what: str, key: str, value: Tensor, param: Tensor) -> None:
    if value.shape != param.shape:
        raise ValueError(f"{what}[{key!r}] has shape {tuple(value.shape)}, "
                         f"expected {tuple(param.shape)}")


class TrainableState:
    """The trainable parameters of one peft model, addressed by state key.

    ``params`` maps each key to the live ``nn.Parameter`` (model order), ``trainable`` lists them for
    an optimizer, ``initial`` is a copy taken at construction (LoRA B = 0 and adapter
    up-projections = 0: the model equals the base)."""

    def __init__(self, model: nn.Module):
        self.params, self._group = _trainable_parameters(model)
        self.trainable = list(self.params.values())
        self.initial = self.extract()
        self.keys = frozenset(self.initial)

    def parameter_group(self, key: str) -> str:
        """``"lora"`` or ``"adapter"`` for a key of the trainable state (``KeyError`` otherwise)."""
        try:
            return self._group[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a key of the trainable state") from None

    def group_keys(self, group: str) -> list[str]:
        """The trainable-state keys of ``group`` (``"lora"`` or ``"adapter"``), in model order."""
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; expected one of {GROUPS}")
        return [k for k, g in self._group.items() if g == group]

    def numel(self, keys=None) -> int:
        """Number of parameters of ``keys`` (default: all trainable keys)."""
        return int(sum(self.params[k].numel() for k in (self.params if keys is None else keys)))

    def load(self, state: Mapping[str, Tensor]) -> None:
        """Copy ``state`` (exactly the trainable keys, same shapes) into the model's parameters."""
        ks = set(state)
        if ks != self.keys:
            raise ValueError(f"start_state keys differ from the model's trainable state: "
                             f"missing {sorted(self.keys - ks)}, extra {sorted(ks - self.keys)}")
        with torch.no_grad():
            for k, p in self.params.items():
                v = state[k]
                _check_shape("start_state", k, v, p)
                p.copy_(v)

    def extract(self) -> dict[str, Tensor]:
        """Detached clones of the current parameters (the state to hand out)."""
        return {k: p.detach().clone() for k, p in self.params.items()}

    def proximal_term(self, anchor: Mapping[str, Tensor] | None, mu: float,
                      form: str = "decoupled") -> ProximalTerm:
        """The proximal term towards ``anchor`` over its keys (a subset of the trainable keys), in
        ``form`` (:class:`ProximalTerm`); empty if ``mu`` is 0 or there is no anchor."""
        if anchor is None or not mu:
            return ProximalTerm([], mu, form)
        extra = sorted(set(anchor) - self.keys)
        if extra:
            raise ValueError(f"prox_anchor has keys that are not trainable: {extra[:4]}")
        pairs = []
        for k, v in anchor.items():
            p = self.params[k]
            _check_shape("prox_anchor", k, v, p)
            pairs.append((p, v.detach().to(p.device, p.dtype)))
        return ProximalTerm(pairs, mu, form)
