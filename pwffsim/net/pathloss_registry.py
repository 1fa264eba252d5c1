"""The path-loss models by name, importable without numpy: the names ``channel.path_loss`` accepts,
a one-line summary of each (the scenario reference is built from them) and the class implementing it.

A model is a class following :class:`pwffsim.net.pathloss.PathLossModel`, in any module; adding one is
that class and its line in :data:`PATH_LOSS_REGISTRY`. The class is imported only when a model is made
(:func:`path_loss_class`), so reading the scenario schema does not import numpy or scipy.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = ["PathLossEntry", "PATH_LOSS_REGISTRY", "path_loss_class", "path_loss_reference"]


class PathLossEntry(NamedTuple):
    target: str
    """Where the class is: ``"package.module:Class"``."""
    summary: str
    """One line for the scenario reference: the formula and its source."""


PATH_LOSS_REGISTRY: dict[str, PathLossEntry] = {
    "macro-128.1-37.6": PathLossEntry("pwffsim.net.pathloss:Macro36814",
                                      "128.1 + 37.6 log10(d_km) dB (3GPP TR 36.814 macro, 2 GHz), no LOS state"),
    "free-space": PathLossEntry("pwffsim.net.pathloss:FreeSpace", "Friis free space 20 log10(4 pi d f / c) dB, no LOS state"),
    "UMa": PathLossEntry("pwffsim.net.pathloss:UMa",
                         "3GPP TR 38.901 urban macro with LOS probability (Tables 7.4.1-1, 7.4.2-1)"),
    "UMi": PathLossEntry("pwffsim.net.pathloss:UMiStreetCanyon", "3GPP TR 38.901 urban micro, street canyon, with LOS probability"),
    "RMa": PathLossEntry("pwffsim.net.pathloss:RMa", "3GPP TR 38.901 rural macro with LOS probability"),
}
"""Name (as in the scenario's ``channel.path_loss``) -> where its class is and what it is."""


def path_loss_class(name: str) -> type:
    """The class registered as ``name`` (imported now); ``ValueError`` for an unknown name."""
    try:
        entry = PATH_LOSS_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown path-loss model {name!r}; expected one of {list(PATH_LOSS_REGISTRY)}") from None
    module, _, cls = entry.target.partition(":")
    return getattr(importlib.import_module(module), cls)


def path_loss_reference() -> str:
    """The models and their summaries, for the description of ``channel.path_loss``."""
    return "Path-loss model: " + "; ".join(f"'{n}': {e.summary}" for n, e in PATH_LOSS_REGISTRY.items()) + "."
