"""Bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2020 style), hand-written.

peft has no bottleneck adapter, and the ``adapters`` package (AdapterHub) pins transformers 4.x, so
pwffsim ships this small module instead. One adapter sits on the output of each transformer block's
MLP::

    h  ->  h + up(GELU(down(h)))        down: d -> m,   up: m -> d  (initialised to ZERO)

so right after insertion the model computes exactly what it computed before. The adapter is
registered as a child ``adapter`` of the existing MLP module (GPT-2 ``transformer.h[i].mlp``,
Llama-like ``model.layers[i].mlp``) and applied by a forward hook, so the base model's parameter
names are untouched and the adapter's are ``...mlp.adapter.down.weight`` etc.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

#: Substring that every adapter parameter name contains.
ADAPTER_TAG = "adapter"


class BottleneckAdapter(nn.Module):
    """``h + up(GELU(down(h)))`` with ``up`` zero-initialised (identity at init)."""

    def __init__(self, d_model: int, size: int, generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"adapter size must be >= 1, got {size}")
        self.down = nn.Linear(d_model, size)
        self.up = nn.Linear(size, d_model)
        with torch.no_grad():
            bound = 1.0 / d_model ** 0.5  # nn.Linear's default scale, drawn from our generator
            self.down.weight.uniform_(-bound, bound, generator=generator)
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(nn.functional.gelu(self.down(h)))


def _adapter_hook(module: nn.Module, args, output):
    if isinstance(output, tuple):  # some MLPs return (hidden, aux); adapt the hidden states
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


def find_block_mlps(model: nn.Module) -> list[nn.Module]:
    """The ``mlp`` module of every transformer block: the blocks are the first ``nn.ModuleList``
    (in module order) whose elements all have an ``mlp`` child (GPT-2 ``transformer.h``, Llama-like
    ``model.layers``, GPT-NeoX ``gpt_neox.layers``, ...). ``ValueError`` if there is none."""
    for _, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) and all(
                isinstance(getattr(b, "mlp", None), nn.Module) for b in m):
            return [b.mlp for b in m]
    raise ValueError("cannot find the transformer blocks' MLPs (no ModuleList of blocks with .mlp)")


def add_adapters(model: nn.Module, d_model: int, size: int, seed: int) -> list[nn.Parameter]:
    """Insert a trainable :class:`BottleneckAdapter` after every block's MLP; returns its parameters.

    The down-projections are drawn from a ``torch.Generator`` seeded with ``seed`` (block order), so
    the init does not depend on the global RNG. Adapters are created on the MLP's device/dtype; on
    torch's ``meta`` device (an architecture built for its shapes only, :mod:`.costmodel`) they are
    made there directly: no memory, nothing drawn.
    """
    gen = torch.Generator().manual_seed(int(seed))
    params: list[nn.Parameter] = []
    for mlp in find_block_mlps(model):
        if hasattr(mlp, ADAPTER_TAG):
            raise ValueError("model already has adapters")
        ref = next(mlp.parameters(), None)
        on_meta = ref is not None and ref.is_meta
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            ad = BottleneckAdapter(d_model, size, generator=None if on_meta else gen)
        if ref is not None:
            ad.to(device=ref.device, dtype=ref.dtype)
        mlp.add_module(ADAPTER_TAG, ad)
        mlp.register_forward_hook(_adapter_hook)
        for p in ad.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params
