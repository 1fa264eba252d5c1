"""How jobs and results cross a process boundary: every state dict as one safetensors buffer.

Pickling a dict of torch tensors to another process hands each tensor over as its own shared-memory
segment and file descriptor (torch's multiprocessing reductions): about 9 ms for the twelve tensors of
the built-in model's trainable state, round trip, where the same bytes in one buffer take 0.3 ms.  So
the pool and remote executors send :class:`PackedState` instead: the tensors serialized together with
``safetensors`` (names, dtypes and shapes kept; values bit for bit; no pickle of tensors), unpacked on
the other side.  :func:`pack_job` / :func:`unpack_job` and :func:`pack_result` / :func:`unpack_result`
do it for the state fields of a :class:`~pwffsim.learn.contract.TrainJob` and a
:class:`~pwffsim.learn.contract.TrainResult`; nothing else of them changes.

A buffer is made once per dict object and reused while that object lives (the global part a round
broadcasts is one dict shared by all its jobs, its proximal anchor too).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Mapping, Optional

#: TrainJob / TrainResult fields holding a state dict (or None).
JOB_STATE_FIELDS = ("start_state", "prox_anchor", "personal_reset", "personal_start")
RESULT_STATE_FIELDS = ("state", "personal_state")


class PackedState:
    """A state dict (name -> CPU tensor) as one safetensors buffer and its key order (safetensors
    sorts keys; a state's order is its model order); ``unpack()`` gives it back: new tensors, same
    names in the same order, dtypes, shapes and values."""

    __slots__ = ("names", "data")

    def __init__(self, names: tuple[str, ...], data: bytes):
        self.names, self.data = names, data

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> "PackedState":
        from safetensors.torch import save

        return cls(tuple(state), save(dict(_own_storage(state))))

    def unpack(self) -> dict:
        from safetensors.torch import load

        loaded = load(self.data)
        return {name: loaded[name] for name in self.names}

    def __reduce__(self):
        return (PackedState, (self.names, self.data))


def _own_storage(state: Mapping[str, Any]):
    """``(name, tensor)`` pairs as safetensors takes them: contiguous, each with a storage of its own
    (a view, a slice or a second name of a storage is copied first)."""
    seen: set[int] = set()
    for name, value in state.items():
        t = value.detach().contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        yield name, t


class PackCache:
    """The buffers of the last few dict objects packed (keyed by identity, each dict held so its
    ``id`` stays its own): the global part a round's jobs share is serialized once, not once per job."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._recent: OrderedDict[int, tuple[Mapping, PackedState]] = OrderedDict()

    def pack(self, state: Optional[Mapping]) -> Optional[PackedState]:
        if state is None:
            return None
        hit = self._recent.get(id(state))
        if hit is not None and hit[0] is state:
            self._recent.move_to_end(id(state))
            return hit[1]
        packed = PackedState.of(state)
        self._recent[id(state)] = (state, packed)
        if len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return packed


def _unpack(value: Any) -> Any:
    return value.unpack() if isinstance(value, PackedState) else value


def pack_job(job: Any, cache: Optional[PackCache] = None) -> Any:
    """``job`` with its state dicts packed (a copy; ``job`` itself is unchanged)."""
    pack = cache.pack if cache is not None else (lambda s: None if s is None else PackedState.of(s))
    return dataclasses.replace(job, **{f: pack(getattr(job, f)) for f in JOB_STATE_FIELDS})


def unpack_job(job: Any) -> Any:
    return dataclasses.replace(job, **{f: _unpack(getattr(job, f)) for f in JOB_STATE_FIELDS})


def pack_result(res: Any) -> Any:
    return dataclasses.replace(res, **{f: None if getattr(res, f, None) is None else PackedState.of(getattr(res, f))
                                       for f in RESULT_STATE_FIELDS if hasattr(res, f)})


def unpack_result(res: Any) -> Any:
    return dataclasses.replace(res, **{f: _unpack(getattr(res, f)) for f in RESULT_STATE_FIELDS if hasattr(res, f)})
