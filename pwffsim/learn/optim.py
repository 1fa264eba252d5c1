"""Local optimisation pieces: the optimizer kind and the supervised losses over response tokens.

**Optimizer** (``TrainSpec.optimizer``, scenario ``fl.optimizer``): ``"adamw"`` (``torch.optim.AdamW``,
no weight decay) or ``"sgd"`` (plain ``torch.optim.SGD``: ``theta <- theta - lr * grad``, no
momentum, no weight decay; the local solver of FedProx). A fresh optimizer per phase of every job
(one for the supervised steps at ``learning_rate``, one for the alignment steps at
``align_learning_rate``, the same kind).

**Response-token cross-entropy** (``TrainSpec.loss_average``, scenario ``fl.loss_average``): a row's
loss terms are the next-token cross-entropies (nats) at its response tokens (label != -100, shifted
by one as the model predicts the next token). ``"sample"``: the mean over rows of each row's mean
(its summed cross-entropy / its response-token count), so a long answer weighs as much as a short
one; ``"token"``: the mean over every response token of the batch (a row weighs by its length).
Rows without a response token (a prompt that fills ``seq_len``) carry no weight in either.

The proximal step is :class:`pwffsim.learn.state.ProximalTerm`'s.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

#: ``TrainSpec.optimizer`` choices.
OPTIMIZERS = ("adamw", "sgd")
#: ``TrainSpec.loss_average`` choices.
LOSS_AVERAGES = ("sample", "token")
IGNORE = -100


def make_optimizer(kind: str, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """A fresh optimizer of ``kind`` (:data:`OPTIMIZERS`) over ``params`` at learning rate ``lr``."""
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    raise ValueError(f"unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


def position_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B, S - 1]``: the next-token cross-entropy (nats) at every position, 0 where the next label
    is -100 (no loss). ``logits`` ``[B, S, V]`` at every input position, ``labels`` ``[B, S]``."""
    tgt = labels[:, 1:]
    lg = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1),
                                             ignore_index=IGNORE, reduction="none").view(tgt.shape)


def row_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(sums, counts)`` per row: the summed next-token cross-entropy (nats) over the row's response
    tokens and their number. ``logits`` ``[B, S, V]`` at every input position, ``labels`` ``[B, S]``
    (-100 = no loss)."""
    return position_cross_entropy(logits, labels).sum(1), (labels[:, 1:] != IGNORE).sum(1)


def held_out_totals(ce: Tensor, labels: Tensor, average: str) -> tuple[float, int]:
    """One batch's part ``(total, count)`` of a held-out mean loss, from its
    :func:`position_cross_entropy` ``ce``: ``"sample"`` the sum of its rows' means (in double) and
    the rows with a response token, ``"token"`` the summed cross-entropy (``nll_loss``'s sum) and
    the response tokens."""
    valid = labels[:, 1:] != IGNORE
    if average == "sample":
        sums, counts = ce.sum(1), valid.sum(1)
        has = counts > 0
        return float((sums[has].double() / counts[has]).sum()), int(has.sum())
    total = torch.nn.functional.nll_loss(-ce.reshape(-1, 1), torch.where(valid, 0, IGNORE).reshape(-1),
                                         ignore_index=IGNORE, reduction="sum")
    return float(total), int(valid.sum())


def sample_mean(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean over rows with a response token of ``sums / counts`` (nan if there is none)."""
    has = counts > 0
    return (sums[has] / counts[has]).mean()


def response_loss(model: nn.Module, ids: Tensor, labels: Tensor, average: str) -> Tensor:
    """The supervised loss of a batch (nats, in the autograd graph), averaged as ``average`` says
    (:data:`LOSS_AVERAGES`; see the module docstring). ``"token"`` is the model's own loss
    (``model(input_ids, labels).loss``)."""
    if average == "token":
        return model(input_ids=ids, labels=labels).loss
    if average == "sample":
        return sample_mean(*row_cross_entropy(model(input_ids=ids).logits, labels))
    raise ValueError(f"unknown loss_average {average!r}; expected one of {LOSS_AVERAGES}")
