"""Trace rows that wait for measurements: an aggregation's rounds and clients rows, written in order.

A parallel executor hands back a client's trained state first and its held-out metrics (eval losses,
rewards) later (:class:`~pwffsim.sim.executor.ProcessPoolExecutor`): the aggregation and the next
round need only the first, the rows need both.  So closing an aggregation queues its rows here, with
every value the simulation may still change (the end time, each device's battery) taken at once, and
the queue writes them, oldest first, as soon as all their clients are measured (at each later
aggregation, without waiting) and at the end of the run (waiting).  The tables come out exactly as if
every row were written at its aggregation; on disk the rounds and clients rows may trail the events
by the aggregations still being measured.  With an in-process executor every handle is ready at once.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Optional


def _ready(handle: Any) -> bool:
    done = getattr(handle, "done", None)
    return True if done is None else bool(done())


class PendingRows:
    """``add(handles, write)``: ``write()`` writes an aggregation's rows once every handle is done;
    :meth:`write_ready` writes what is ready (``wait=True``: everything), flushes the recorder and
    calls ``on_round`` with each rounds row written."""

    def __init__(self, recorder: Any, on_round: Optional[Callable[[dict], None]] = None):
        self.recorder, self.on_round = recorder, on_round
        self._queue: deque[tuple[list, Callable[[], None]]] = deque()

    def add(self, handles: Iterable[Any], write: Callable[[], None]) -> None:
        self._queue.append((list(handles), write))

    def __len__(self) -> int:
        return len(self._queue)

    def write_ready(self, wait: bool = False) -> None:
        written = []
        while self._queue and (wait or all(_ready(h) for h in self._queue[0][0])):
            _, write = self._queue.popleft()
            write()
            written.append(self.recorder.rounds[-1])
        self.recorder.flush()
        if self.on_round is not None:
            for row in written:
                self.on_round(row)
