"""The architectures a run can be *charged* for (``model.cost_model``): names, files and checks.

Torch-free, so validating a scenario can check a cost model without importing torch; building the
architecture and counting it is :mod:`pwffsim.learn.costmodel`.

A cost model is one of the shipped architectures (:data:`SHIPPED`: ``config.json`` facts of public
LLMs in ``pwffsim/assets/cost_models/``, written out by hand, no weights) or a local Hugging Face
``config.json`` (a file, or a checkpoint directory holding one). Keys starting with ``_`` are notes
(e.g. ``_reproduces``: which public config a shipped file reproduces) and are ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COST_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "cost_models"

#: Shipped cost models: name -> the public config it reproduces.
SHIPPED: dict[str, str] = {
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "gemma-2-2b": "google/gemma-2-2b",
}

#: Bytes per parameter of an update sent in each ``model.update_dtype``.
UPDATE_DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

#: ``config.json`` keys every cost model must give as positive integers.
REQUIRED_INT_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")


def is_shipped(name: str) -> bool:
    """Whether ``name`` names a shipped cost model (case-insensitive)."""
    return name.lower() in SHIPPED


def cost_model_path(name_or_path: str) -> Path:
    """The ``config.json`` of a shipped name, or ``name_or_path`` itself (a directory: its
    ``config.json``)."""
    if is_shipped(name_or_path):
        return COST_MODEL_DIR / f"{name_or_path.lower()}.json"
    p = Path(name_or_path).expanduser()
    return p / "config.json" if p.is_dir() else p


def read_cost_config(name_or_path: str) -> dict[str, Any]:
    """The config dict of a cost model (notes dropped), checked: a JSON object with a string
    ``model_type`` and the :data:`REQUIRED_INT_KEYS` as positive integers. ``ValueError`` with a
    one-line message naming the file otherwise."""
    path = cost_model_path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"cost model {str(path)!r}: no such file (a config.json path or one of "
                         f"{', '.join(SHIPPED)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cost model {str(path)!r}: cannot read ({type(e).__name__})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"cost model {str(path)!r}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"cost model {str(path)!r}: expected a JSON object (a config.json)")
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise ValueError(f"cost model {str(path)!r}: 'model_type' must be a non-empty string")
    for key in REQUIRED_INT_KEYS:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"cost model {str(path)!r}: {key!r} must be a positive integer, "
                             f"given {v!r}")
    return {k: v for k, v in data.items() if not k.startswith("_")}
