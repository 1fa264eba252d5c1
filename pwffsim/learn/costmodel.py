"""The model a run is *charged* for: the trained model itself, or a real LLM built on ``meta``.

``model.cost_model`` (:attr:`pwffsim.learn.model.ModelSpec.cost_model`) lets the delays, energies
and payload sizes be those of a real architecture while the learning runs on the (tiny) trained
model. The architecture comes from a ``config.json`` (:mod:`.costconfig`: a shipped public LLM or a
local file) and is built on torch's ``meta`` device, ``AutoModelForCausalLM.from_config`` with eager
attention: every module and parameter shape, no weights, no memory. The scenario's LoRA (same rank,
alpha, dropout; the trained model's target modules mapped to the architecture's names, see
:func:`map_target_modules`) and bottleneck adapters (:func:`pwffsim.learn.adapters.add_adapters`) are
applied to it exactly as to the trained model, and then:

* **parameters** are counted exactly per group (``"lora"``, ``"adapter"``: the trained model's
  grouping, :func:`pwffsim.learn.state._trainable_parameters`), so the global part of a scheme is
  the sum of its groups;
* **FLOPs per token** come from the same analytic model as the trained model's
  (:class:`pwffsim.learn.cost.TokenFlops`, read from the built modules: gated MLPs, grouped-query
  k/v widths, fused projections, tied or untied LM heads), applied to the same token positions as
  the trained model's update (sequence length, prompt length, generated tokens); also with only one
  group trainable (``per_token_by_group``: the phases of FedRep's alternating update);
* **payload bytes** of a transfer = parameters of the global groups x the bytes of
  ``model.update_dtype`` (fp32 4, bf16 / fp16 2).

Without a cost model the charged model is the trained one: the same per-token FLOPs and, in fp32,
the same payload as the global tensors' bytes (the traces do not change).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn

from .cost import TokenFlops, matmul_modules
from .costconfig import UPDATE_DTYPE_BYTES, read_cost_config

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelSpec

#: What each LoRA target name of a trained model does (GPT-2's and Llama's names): a name the charged
#: architecture lacks is replaced by the architecture's projections of the same roles.
TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "c_attn": ("qkv",), "c_proj": ("attn_out", "mlp_out"), "attn.c_proj": ("attn_out",),
    "mlp.c_proj": ("mlp_out",), "c_fc": ("mlp_in",),
    "q_proj": ("qkv",), "k_proj": ("qkv",), "v_proj": ("qkv",), "qkv_proj": ("qkv",),
    "o_proj": ("attn_out",), "gate_proj": ("mlp_in",), "up_proj": ("mlp_in",),
    "gate_up_proj": ("mlp_in",), "down_proj": ("mlp_out",),
}

#: A role's projections in an architecture: the first candidate whose names all exist is taken
#: (Llama / Qwen / Gemma split projections, Phi-3 fused ones, GPT-2, GPT-NeoX).
ROLE_MODULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "qkv": (("q_proj", "k_proj", "v_proj"), ("qkv_proj",), ("c_attn",), ("query_key_value",)),
    "attn_out": (("o_proj",), ("attn.c_proj",), ("attention.dense",)),
    "mlp_in": (("gate_proj", "up_proj"), ("gate_up_proj",), ("c_fc",), ("dense_h_to_4h",)),
    "mlp_out": (("down_proj",), ("mlp.c_proj",), ("dense_4h_to_h",)),
}


def _present(target: str, names: Iterable[str]) -> bool:
    """Whether a LoRA target matches a module name as peft matches it (the name or a suffix)."""
    return any(n == target or n.endswith("." + target) for n in names)


def map_target_modules(targets: Iterable[str], module_names: Iterable[str], where: str = "") -> list[str]:
    """The trained model's LoRA ``targets`` in the architecture whose matmul modules are named
    ``module_names``: a target it has is kept; another is replaced by the projections of its roles
    (:data:`TARGET_ROLES`, :data:`ROLE_MODULES`), e.g. GPT-2's fused ``c_attn`` by Llama's
    ``q_proj``, ``k_proj``, ``v_proj`` and Phi-3's ``qkv_proj``. ``ValueError`` if one has no
    counterpart. Sorted, without repeats."""
    names = list(module_names)
    out: set[str] = set()
    for t in targets:
        if _present(t, names):
            out.add(t)
            continue
        found = [next((c for c in ROLE_MODULES[role] if all(_present(n, names) for n in c)), None)
                 for role in TARGET_ROLES.get(t, ())]
        if not found or None in found:
            raise ValueError(f"LoRA target module {t!r} has no counterpart in the cost model "
                             f"{where} (set model.target_modules to names both architectures have)")
        out.update(n for c in found for n in c)
    return sorted(out)


def architecture_config(name_or_path: str):
    """The transformers config of a cost model (:func:`.costconfig.read_cost_config`), eager
    attention. ``ValueError`` naming the file if transformers cannot build it."""
    from transformers import AutoConfig

    raw = dict(read_cost_config(name_or_path))
    model_type = raw.pop("model_type")
    try:
        cfg = AutoConfig.for_model(model_type, **raw)
    except Exception as e:  # noqa: BLE001 - re-raised as one line naming the cost model
        raise ValueError(f"cost model {name_or_path!r}: transformers cannot build model_type "
                         f"{model_type!r}: {type(e).__name__}: {e}") from e
    cfg._attn_implementation = "eager"
    return cfg


def build_architecture(config, spec: ModelSpec, targets: Iterable[str] | None,
                       device: str | torch.device = "meta", where: str = "") -> nn.Module:
    """The architecture of ``config`` with ``spec``'s LoRA on ``targets`` (mapped,
    :func:`map_target_modules`; None: peft's default for the architecture) and adapters, on
    ``device`` (``meta``: shapes only; another device for a random-init model, e.g. to count its
    FLOPs). Nothing touches the global RNG on ``meta``."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from .adapters import add_adapters
    from .model import _quiet_transformers, lora_config

    _quiet_transformers()
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    matmuls = set(matmul_modules(base))
    names = [n for n, m in base.named_modules() if m in matmuls]
    mapped = None if targets is None else map_target_modules(targets, names, where)
    with torch.device(device):
        model = get_peft_model(base, lora_config(spec, config.model_type, mapped))
        if spec.adapter_size:
            add_adapters(model, int(config.hidden_size), spec.adapter_size, seed=spec.seed + 0xADA)
    return model


@dataclass(frozen=True)
class ChargedModel:
    """The counts a run is charged for: per-token FLOPs, parameters per group, update dtype."""
    name: str
    per_token: TokenFlops
    group_params: dict[str, int]   # "lora" / "adapter" -> parameters (the trainable state's groups)
    base_params: int               # frozen parameters of the base (tied embeddings counted once)
    dtype_bytes: int = 4
    target_modules: tuple[str, ...] = field(default=())
    # group -> per-token FLOPs when only that group trains (the others frozen: FedRep's phases)
    per_token_by_group: dict[str, TokenFlops] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, model: nn.Module, update_dtype: str = "fp32") -> ChargedModel:
        """The counts of a peft model with LoRA and adapters (trained or built on ``meta``)."""
        from .state import GROUPS, _trainable_parameters, frozen

        params, group = _trainable_parameters(model)
        counts = {g: int(sum(params[k].numel() for k in params if group[k] == g)) for g in GROUPS}
        base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        targets = getattr(next(iter(model.peft_config.values()), None), "target_modules", None) or ()
        by_group = {}
        for g in GROUPS:
            if counts[g]:
                with frozen(p for k, p in params.items() if group[k] != g):
                    by_group[g] = TokenFlops.of(model)
        return cls(name=name, per_token=TokenFlops.of(model), group_params=counts,
                   base_params=int(base), dtype_bytes=UPDATE_DTYPE_BYTES[update_dtype],
                   target_modules=tuple(sorted(targets)), per_token_by_group=by_group)

    @property
    def trainable_params(self) -> int:
        return int(sum(self.group_params.values()))

    def payload_bytes(self, groups: Iterable[str]) -> int:
        """Bytes of an update of ``groups`` (the global ones): their parameters x dtype bytes."""
        return int(sum(self.group_params[g] for g in set(groups))) * self.dtype_bytes


def charged_model(trained: nn.Module, spec: ModelSpec) -> ChargedModel:
    """What the devices are charged for under ``spec``: the trained peft model ``trained`` itself
    (``spec.cost_model`` None) or the architecture ``spec.cost_model`` names, built on ``meta``
    with the trained model's LoRA target modules and ``spec``'s rank and adapters."""
    if spec.cost_model is None:
        return ChargedModel.of(spec.source, trained, spec.update_dtype)
    config = architecture_config(spec.cost_model)
    targets = getattr(next(iter(trained.peft_config.values())), "target_modules", None)
    where = repr(spec.cost_model)
    try:
        model = build_architecture(config, spec, targets, "meta", where=where)
        return ChargedModel.of(spec.cost_model, model, spec.update_dtype)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a config.json whose pad id exceeds its vocabulary
        raise ValueError(f"cost model {where}: cannot build the architecture with LoRA and adapters: "
                         f"{type(e).__name__}: {e}") from e
