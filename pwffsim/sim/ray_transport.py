"""How a :class:`~pwffsim.learn.contract.TrainJob` travels to a Ray actor: the broadcast part once, by reference.

The jobs of one round share their global part: ``TrainJobs`` builds every client's
``start_state = {**glob, **personal}`` from the very same ``glob`` dict (the version the client
downloaded), so the global tensors of those jobs are the same Python objects, and ``prox_anchor`` is
``glob`` itself. :class:`SharedParts` (driver side) turns such a part into one ``ray.put`` per distinct
set of tensors: a part is keyed by its keys and the *identity* (``id``) of its tensors, and the cache
keeps the tensors alive, so an id cannot be reused by another tensor while its entry lives. The part of
``start_state`` taken as shared is the global part, read from the job itself: ``prox_anchor``'s keys
if the job has one, else every key of ``start_state`` but ``personal_reset``'s (the personal part's
keys). ``personal_reset`` (the personal part's initial values, the same dict for every job of a run) is
shared the same way. The rest (a client's own personal part, Ditto's ``personal_start``) goes by value.

The guess never changes a result, only what is copied: a part taken as shared that is not (a stub's
jobs, say) costs one ``ray.put`` per job and nothing else; the actor always rebuilds the very same
``start_state`` (keys in their order, the same values). It relies on the contract's rule that states are
never modified in place (the orchestrator builds new tensors at every aggregation).

Actor side, :func:`unpack` fetches a shared part once per actor (:class:`PartCache`, by object id) and
reuses the fetched tensors for every later job of that version: the learner never modifies a state
it is given. Both sides import no torch and no ray (``put`` and ``get`` are passed in).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Callable, Mapping

#: Shared parts kept per driver and per actor (versions in flight at once: the asynchronous policies'
#: clients start from older versions, hierarchical ones from their edge's model).
CACHE_SIZE = 16

_STATE_FIELDS = ("start_state", "prox_anchor", "personal_reset", "personal_start")


@dataclasses.dataclass(frozen=True)
class Shared:
    """A part sent by reference (a ``ray.ObjectRef`` nested in the arguments, so Ray does not fetch it
    for every task: :class:`PartCache` does, once)."""
    ref: Any


@dataclasses.dataclass
class PackedJob:
    """A job as it travels: its plain fields, ``start_state``'s key order, its shared and own parts."""
    fields: dict                     # TrainJob's fields but the four states
    order: tuple                     # start_state's keys, in order
    shared: Shared | None            # start_state's global part (by reference)
    own: dict                        # start_state's other tensors (by value)
    parts: dict                      # prox_anchor / personal_reset / personal_start: Shared, dict or None


def _lru_get(cache: OrderedDict, key: Any, make: Callable[[], Any], size: int) -> tuple[Any, bool]:
    """``cache[key]``, made by ``make()`` on a miss (the least recently used entries dropped beyond
    ``size``), and whether it was made."""
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
        return value, False
    value = cache[key] = make()
    while len(cache) > size:
        cache.popitem(last=False)
    return value, True


def _signature(part: Mapping) -> tuple:
    return tuple((k, id(v)) for k, v in part.items())


class SharedParts:
    """Driver side: one object reference per distinct dict of tensors, by identity (a small LRU)."""

    def __init__(self, put: Callable[[Any], Any], size: int = CACHE_SIZE):
        self._put, self._size = put, size
        self._cache: OrderedDict[tuple, tuple[Any, dict]] = OrderedDict()
        self.puts = 0  # parts actually put (the rest were found in the cache)

    def ref(self, part: Mapping) -> Shared:
        def put() -> tuple[Any, dict]:
            kept = dict(part)  # holds the tensors: their ids stay theirs while the entry lives
            return self._put(kept), kept

        hit, made = _lru_get(self._cache, _signature(part), put, self._size)
        self.puts += made
        return Shared(hit[0])

    def clear(self) -> None:
        self._cache.clear()


def global_keys(job: Any) -> set:
    """The keys of ``job.start_state`` taken as its global (shared) part."""
    if job.prox_anchor is not None:
        return set(job.prox_anchor)
    return set(job.start_state) - set(job.personal_reset or ())


def pack(job: Any, shared: SharedParts) -> PackedJob:
    """``job`` (a TrainJob) with its shared parts replaced by references."""
    fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name not in _STATE_FIELDS}
    glob = global_keys(job)
    start = job.start_state
    common = {k: v for k, v in start.items() if k in glob}
    own = {k: v for k, v in start.items() if k not in glob}
    parts = {"prox_anchor": shared.ref(job.prox_anchor) if job.prox_anchor is not None else None,
             "personal_reset": shared.ref(job.personal_reset) if job.personal_reset is not None else None,
             "personal_start": job.personal_start}
    return PackedJob(fields, tuple(start), shared.ref(common) if common else None, own, parts)


class PartCache:
    """Actor side: the shared parts fetched so far, by object id (a small LRU)."""

    def __init__(self, get: Callable[[Any], Any], size: int = CACHE_SIZE):
        self._get, self._size = get, size
        self._parts: OrderedDict[Any, dict] = OrderedDict()
        self.fetches = 0

    def __call__(self, part: Any) -> Any:
        if not isinstance(part, Shared):
            return part  # None, or a dict sent by value
        key = part.ref.binary() if hasattr(part.ref, "binary") else part.ref
        value, made = _lru_get(self._parts, key, lambda: self._get(part.ref), self._size)
        self.fetches += made
        return value


def unpack(packed: PackedJob, parts: PartCache, job_type: type) -> Any:
    """The job :func:`pack` was given, rebuilt (``start_state``'s keys in their order)."""
    common = parts(packed.shared) or {}
    own = packed.own
    start = {k: common[k] if k in common else own[k] for k in packed.order}
    return job_type(**packed.fields, start_state=start,
                    **{name: parts(value) for name, value in packed.parts.items()})
