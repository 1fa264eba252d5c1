"""Several clients' trainable states in one model: stacked tensors and a per-client forward.

The batched local update (:mod:`pwffsim.learn.batched`) keeps every client's value of a trainable
key as one slice of a tensor with a new leading dimension (``(K, *shape)`` for ``K`` clients) and runs
the frozen base once over the rows of every client. Inside :func:`per_client_forward` the model's
trainable linear maps compute each row with its own client's slice (``bmm`` over rows):

* a LoRA layer (peft's ``lora.Linear``): ``base(x) + B_k(A_k(x)) * scaling``;
* an adapter (:class:`~pwffsim.learn.adapters.BottleneckAdapter`): ``h + up_k(GELU(down_k(h)))``;
* and, if asked, the output embedding (the LM head) computes the logits of the selected positions
  only (the response tokens a loss needs), and so does the last block's MLP: the hidden states at
  other positions reach no logit (nothing attends to them after the last block), so their MLP output
  is left at zero (their gradient is zero either way).

**Gradients as sequential training computes them.** A forward may hold any of the step's rows, cut
to any length (:class:`StepRows`). The gradient a trainable map passes back to its input is computed
per row, as a plain linear layer does; its own weight gradient is not: each map records its inputs and
output gradients at their rows' places in buffers laid out as the step's full batch (``K`` clients x
``rows`` x ``seq_len``, zeros where nothing was computed) and :meth:`StepRows.weight_grads` forms
every client's ``G_k^T X_k`` (and bias ``sum G_k``) once after the backward, over the same positions
in the same order as ``torch.nn.functional.linear``'s backward in a sequential run does (there the
positions past a row's last response token carry a zero gradient too).

:func:`stack_layout` says whether a model can be batched this way (every trainable parameter a
vanilla LoRA matrix or an adapter's, no active dropout anywhere: a dropout mask would be drawn from
the global RNG, in a different order than sequential runs) and maps the modules to state keys.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

from .adapters import BottleneckAdapter, find_block_mlps


@dataclass(frozen=True)
class LinearMap:
    """A trainable linear map: its weight's state key (``(out, in)``) and its bias's (or None)."""
    weight: str
    bias: str | None = None


@dataclass(frozen=True)
class LoraSite:
    module: nn.Module
    a: LinearMap
    b: LinearMap
    scaling: float


@dataclass(frozen=True)
class AdapterSite:
    module: BottleneckAdapter
    down: LinearMap
    up: LinearMap


@dataclass(frozen=True)
class StackLayout:
    """Where each trainable key acts (``lora`` / ``adapters``), or why the model cannot be batched
    (``blocker``, None if it can). ``head``: the output embedding, if its logits can be computed at
    selected positions only (a plain frozen linear layer); ``last_mlp``: the last block's MLP, if it
    can be computed at those positions only (no LoRA layer inside)."""
    lora: tuple[LoraSite, ...] = ()
    adapters: tuple[AdapterSite, ...] = ()
    head: nn.Module | None = None
    last_mlp: nn.Module | None = None
    blocker: str | None = None


def _active_dropout(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            return f"dropout p={m.p} at {name}"
    p = getattr(getattr(model, "config", None), "attention_dropout", 0.0)
    if isinstance(p, float) and p > 0:
        return f"attention_dropout {p}"
    return None


def _lora_site(module: nn.Module, key_of: Mapping[int, str]) -> LoraSite | str:
    """The site of a peft LoRA layer, or why it cannot be batched."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    active = list(module.active_adapters)
    if not isinstance(module, LoraLinear) or len(active) != 1 or getattr(module, "merged", False):
        return f"{type(module).__name__} (only peft's lora.Linear, one active adapter, unmerged)"
    name = active[0]
    A, B = module.lora_A[name], module.lora_B[name]
    if getattr(module, "lora_variant", {}).get(name) is not None or A.bias is not None or B.bias is not None:
        return "a LoRA variant or bias (only vanilla LoRA)"
    if id(A.weight) not in key_of or id(B.weight) not in key_of:
        return "a LoRA layer whose matrices are not trainable"
    return LoraSite(module, LinearMap(key_of[id(A.weight)]), LinearMap(key_of[id(B.weight)]),
                    float(module.scaling[name]))


def _adapter_site(m: BottleneckAdapter, key_of: Mapping[int, str]) -> AdapterSite | str:
    keys = [key_of.get(id(p)) for p in (m.down.weight, m.down.bias, m.up.weight, m.up.bias)]
    if None in keys:
        return "an adapter whose parameters are not all trainable"
    return AdapterSite(m, LinearMap(keys[0], keys[1]), LinearMap(keys[2], keys[3]))


def _output_head(model: nn.Module, trained: set[int]) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    plain = type(head) is nn.Linear and not any(id(p) in trained for p in head.parameters())
    return head if plain else None


def stack_layout(model: nn.Module, params: Mapping[str, nn.Parameter]) -> StackLayout:
    """The :class:`StackLayout` of a peft model whose trainable parameters are ``params`` (state
    key -> parameter)."""
    from peft.tuners.lora import LoraLayer

    if (why := _active_dropout(model)) is not None:
        return StackLayout(blocker=why)
    key_of = {id(p): k for k, p in params.items()}
    lora, adapters, covered = [], [], set()
    for _, m in model.named_modules():
        if isinstance(m, BottleneckAdapter):
            site = _adapter_site(m, key_of)
        elif isinstance(m, LoraLayer):
            site = _lora_site(m, key_of)
        else:
            continue
        if isinstance(site, str):
            return StackLayout(blocker=site)
        (adapters if isinstance(site, AdapterSite) else lora).append(site)
        maps = (site.down, site.up) if isinstance(site, AdapterSite) else (site.a, site.b)
        covered.update(k for mp in maps for k in (mp.weight, mp.bias) if k is not None)
    if covered != set(params):
        return StackLayout(blocker=f"trainable keys outside LoRA and adapters: {sorted(set(params) - covered)[:3]}")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        mlp = find_block_mlps(model)[-1]
    except ValueError:  # no block MLPs found: every position of the last block is computed
        mlp = None
    inside = {id(m) for m in mlp.modules()} if mlp is not None else set()
    last_mlp = None if any(id(s.module) in inside for s in lora) else mlp
    return StackLayout(tuple(lora), tuple(adapters), _output_head(base, set(key_of)), last_mlp)


@dataclass
class _Record:
    """One map's inputs and output gradients at their rows' places in the step's full batch."""
    x: Tensor
    g: Tensor


def _apply_rows(x: Tensor, w: Tensor, b: Tensor | None, client: Tensor) -> Tensor:
    """``x_i w_i^T (+ b[client_i])`` per row (``w`` already per row)."""
    wt = w.transpose(1, 2)
    return torch.bmm(x, wt) if b is None else torch.baddbmm(b.index_select(0, client).unsqueeze(1), x, wt)


class _RowLinear(torch.autograd.Function):
    """``y_i = x_i W_c^T (+ b_c)`` for each row ``i`` of client ``c = client[i]`` (``W`` ``(K, out,
    in)``, ``b`` ``(K, out)`` stacked); records ``x`` and the gradient of ``y`` in ``rec`` at
    ``rows``. Autograd gives ``W`` and ``b`` no gradient: :meth:`StepRows.weight_grads` does."""

    @staticmethod
    def forward(ctx, x, W, b, client: Tensor, rec: _Record, rows: Tensor):
        w = W.index_select(0, client)
        rec.x[rows, :x.shape[1]] = x
        ctx.rec, ctx.rows = rec, rows
        ctx.save_for_backward(w)
        return _apply_rows(x, w, b, client)

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        ctx.rec.g[ctx.rows, :g.shape[1]] = g
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None, None


@dataclass
class StepRows:
    """One step's batch of ``clients`` x ``per_client`` rows of ``seq_len`` (row ``i`` is client
    ``i // per_client``'s) and which of them the current forward computes: ``rows`` (their indices)
    and, for the LM head, ``positions`` (``(row in the forward, column)`` of the logits to compute;
    None: every position). ``record`` False (a forward without backward): no weight gradients."""
    stacked: Mapping[str, Tensor]
    clients: int
    per_client: int
    seq_len: int
    rows: Tensor | None = None
    positions: tuple[Tensor, Tensor] | None = None
    record: bool = True
    _records: dict[LinearMap, _Record] = field(default_factory=dict)

    def linear(self, m: LinearMap, x: Tensor) -> Tensor:
        """``m`` applied to the forward's rows of ``x`` ``(n, ..., in)``, each with its client's slice."""
        client = torch.div(self.rows, self.per_client, rounding_mode="floor")
        W = self.stacked[m.weight]
        b = None if m.bias is None else self.stacked[m.bias]
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])
        if not self.record:
            y = _apply_rows(x3, W.detach().index_select(0, client), None if b is None else b.detach(), client)
            return y.reshape(*x.shape[:-1], y.shape[-1])
        rec = self._records.get(m)
        if rec is None:
            n = self.clients * self.per_client
            rec = self._records[m] = _Record(x.new_zeros(n, self.seq_len, W.shape[2]),
                                             x.new_zeros(n, self.seq_len, W.shape[1]))
        y = _RowLinear.apply(x3, W, b, client, rec, self.rows)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def weight_grads(self) -> None:
        """Add every map's weight (and bias) gradient of this step to the stacked tensors' ``.grad``
        (a map no row reached gets zeros), and start the next step."""
        grads, K = {}, self.clients
        for m, rec in self._records.items():
            if not self.stacked[m.weight].requires_grad:
                continue
            g, x = rec.g.view(K, -1, rec.g.shape[-1]), rec.x.view(K, -1, rec.x.shape[-1])
            grads[m.weight] = torch.bmm(g.transpose(1, 2), x)
            if m.bias is not None:
                grads[m.bias] = g.sum(1)
        for key, t in self.stacked.items():
            if not t.requires_grad:  # frozen in this phase
                continue
            add = grads.get(key)
            if add is None:
                add = torch.zeros_like(t)
            t.grad = add if t.grad is None else t.grad + add
        self._records.clear()


@dataclass
class _Forwards:
    step: StepRows

    def lora(self, site: LoraSite):
        base, step = site.module.base_layer, self.step

        def forward(x, *args, **kwargs):
            out = base(x, *args, **kwargs)
            delta = step.linear(site.b, step.linear(site.a, x)) * site.scaling
            return out + delta.reshape(out.shape)
        return forward

    def adapter(self, site: AdapterSite):
        step = self.step

        def forward(h):
            return h + step.linear(site.up, nn.functional.gelu(step.linear(site.down, h)))
        return forward

    def head(self, module: nn.Module):
        own, step = type(module).forward, self.step

        def forward(h):
            return own(module, h if step.positions is None else h[step.positions])
        return forward

    def last_mlp(self, module: nn.Module):
        own, step = type(module).forward, self.step

        def forward(h, *args, **kwargs):
            if step.positions is None:
                return own(module, h, *args, **kwargs)
            return h.new_zeros(h.shape).index_put(step.positions, own(module, h[step.positions], *args, **kwargs))
        return forward


@contextlib.contextmanager
def per_client_forward(layout: StackLayout, step: StepRows, select_logits: bool = False) -> Iterator[StepRows]:
    """Inside the block the model computes each row of ``step`` (yielded; set its ``rows`` before
    each forward) with its client's slice of ``step.stacked`` (key -> ``(K, *shape)``).
    ``select_logits``: the LM head (and the last block's MLP, if ``layout.last_mlp``) computes
    ``step.positions`` only (``logits`` then ``(positions, vocab)``); needs ``layout.head``."""
    if layout.blocker is not None:
        raise ValueError(f"this model cannot be batched: {layout.blocker}")
    f = _Forwards(step)
    patched = [(s.module, f.lora(s)) for s in layout.lora] + [(s.module, f.adapter(s)) for s in layout.adapters]
    if select_logits:
        if layout.head is None:
            raise ValueError("the output embedding is not a plain frozen linear layer")
        patched.append((layout.head, f.head(layout.head)))
        if layout.last_mlp is not None:
            patched.append((layout.last_mlp, f.last_mlp(layout.last_mlp)))
    try:
        for module, forward in patched:
            module.forward = forward
        yield step
    finally:
        for module, _ in patched:
            module.__dict__.pop("forward", None)
