"""Argument checks shared by the channel formulas (:mod:`pwffsim.net.channel`, :mod:`pwffsim.net.pathloss`,
:mod:`pwffsim.net.tr38901`): real numbers or arrays in, ``ValueError`` naming the argument out, and a
Python ``float`` back for a scalar result.

Network side only: numpy and the standard library (never torch).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["scalar_or_array", "as_float_array", "nonnegative", "positive", "check_rng"]


def scalar_or_array(x: Any) -> Any:
    """A Python float for a 0-d result, the array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float array; ``ValueError`` naming ``name`` if it is not real or is NaN."""
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number or an array of real numbers, got {x!r}") from exc
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must not be NaN, got {x!r}")
    return arr


def nonnegative(x: Any, name: str) -> np.ndarray:
    """:func:`as_float_array`, every element ``>= 0``."""
    arr = as_float_array(x, name)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {x!r}")
    return arr


def positive(x: Any, name: str) -> np.ndarray:
    """:func:`as_float_array`, every element ``> 0``."""
    arr = as_float_array(x, name)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {x!r}")
    return arr


def check_rng(rng: Any) -> None:
    """``ValueError`` unless ``rng`` is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
