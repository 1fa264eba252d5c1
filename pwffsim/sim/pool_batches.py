"""Batched training in the process pool (``execution.executor = "process"`` with
``execution.batch_clients = K > 1``): a worker computes several clients' updates together
(:meth:`pwffsim.learn.train.Learner.run_many`).

Submitted jobs wait in the main process until a result is first asked for (in synchronous rounds: at
the aggregation, when every selected client's job is in); then every waiting job is dispatched at once,
cut in submission order into groups of at most K, as many groups as needed and a multiple of the
workers, sizes as even as possible (5 jobs, 2 workers, K = 5: groups of 3 and 2), one ``run_many`` call
per group.  A result depends only on its job (and the batched update equals the one-by-one update: see
:mod:`pwffsim.learn.batched`), so the grouping never changes a result.  The price of waiting: a pool
with batches does not train while the event loop runs (the in-process executor never does either).
"""
from __future__ import annotations

import concurrent.futures as cf
import math
from typing import Any

from ..learn.contract import TrainJob, TrainResult
from .wire import unpack_result


def group_sizes(n: int, size: int, workers: int) -> list[int]:
    """Sizes of the groups ``n`` jobs are cut into: at most ``size`` each, a multiple of ``workers``
    groups (none empty), as even as possible, larger ones first."""
    if n <= 0:
        return []
    groups = min(n, workers * math.ceil(n / (workers * size)))
    base, extra = divmod(n, groups)
    return [base + 1] * extra + [base] * (groups - extra)


class BatchedPoolHandle:
    """A job waiting for its group's dispatch, then its slot in the group's future."""

    def __init__(self, batches: "PoolBatches", job: TrainJob):
        self._batches, self.job = batches, job
        self._future: cf.Future | None = None
        self._slot = 0
        self._result: TrainResult | None = None
        self._cancelled = False

    def bind(self, future: cf.Future, slot: int) -> None:
        self._future, self._slot, self.job = future, slot, None

    def result(self) -> TrainResult:
        if self._cancelled:
            raise RuntimeError("result() of a cancelled training job")
        if self._result is None:
            if self._future is None:
                self._batches.dispatch()
            self._result = unpack_result(self._future.result()[self._slot])
        return self._result

    trained = result

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def cancel(self) -> bool:
        """A waiting job is dropped (True); a dispatched one runs with its group (False)."""
        if self._future is None and not self._cancelled:
            self._batches.discard(self)
            self._cancelled, self.job = True, None
            return True
        return False


class PoolBatches:
    """The jobs waiting in the main process; :meth:`dispatch` sends them as groups to ``submit_group``
    (``list of packed jobs -> future of a list of packed results``)."""

    def __init__(self, submit_group: Any, pack: Any, size: int, workers: int):
        self._submit_group, self._pack, self.size, self.workers = submit_group, pack, size, workers
        self._waiting: list[BatchedPoolHandle] = []

    def submit(self, job: TrainJob) -> BatchedPoolHandle:
        handle = BatchedPoolHandle(self, job)
        self._waiting.append(handle)
        return handle

    def discard(self, handle: BatchedPoolHandle) -> None:
        self._waiting = [h for h in self._waiting if h is not handle]

    def dispatch(self) -> None:
        waiting, self._waiting = self._waiting, []
        start = 0
        for n in group_sizes(len(waiting), self.size, self.workers):
            group = waiting[start:start + n]
            start += n
            future = self._submit_group([self._pack(h.job) for h in group])
            for slot, handle in enumerate(group):
                handle.bind(future, slot)
