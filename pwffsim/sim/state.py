"""The run state: model parts and versions (what a checkpoint needs), in plain objects.

* :class:`ModelSplit` says which named tensors are global (averaged by the server) and which stay
  personal on the device (PWFF's global partial aggregation).
* :class:`RunState` holds the server's global part, every device's personal part, the edge servers'
  parts (hierarchical) and the version counters.
* :class:`ClientOutcome` is what one client's round ended with.
* :class:`ClientUpdate` is what an aggregation policy is given for one client.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..status import Status


@dataclass
class ModelSplit:
    """Which parameter names are global and which personal, and the personal part a device starts with.

    ``charged_payload_bytes``: the size of the global part as the learner charges it (a learner with
    ``charged_payload_bytes(groups)``, e.g. one charged for a real LLM's update, ``model.cost_model``);
    None: the global tensors' own bytes. ``initial_model``: the whole initial state (Ditto's personal
    model of a device that has not trained yet; the same tensors, not copies)."""

    global_keys: list[str]
    personal_keys: list[str]
    initial_personal: dict
    charged_payload_bytes: Optional[int] = None
    initial_model: dict = field(default_factory=dict)

    @classmethod
    def of(cls, learner: Any, initial_state: Mapping, global_groups) -> "ModelSplit":
        groups = set(global_groups)
        global_keys = [k for k in initial_state if learner.parameter_group(k) in groups]
        personal_keys = [k for k in initial_state if k not in set(global_keys)]
        charged = getattr(learner, "charged_payload_bytes", None)
        nbytes = int(charged(tuple(sorted(groups)))) if callable(charged) else None
        return cls(global_keys, personal_keys, {k: initial_state[k] for k in personal_keys}, nbytes,
                   dict(initial_state))

    def global_part(self, state: Mapping) -> dict:
        return {key: state[key] for key in self.global_keys}

    def personal_part(self, state: Mapping) -> dict:
        return {key: state[key] for key in self.personal_keys}


@dataclass
class RunState:
    """Everything a later checkpoint needs, in plain objects."""

    round: int = 0
    global_state: dict = field(default_factory=dict)      # the global part (server's copy)
    personal_state: dict = field(default_factory=dict)    # client -> its personal part (never uploaded)
    # client -> its own full personal model (pwff.scheme = "ditto": v_k, every trainable key; never
    # uploaded); a separate dict, so its keys never meet the global part's
    personal_models: dict = field(default_factory=dict)
    rounds_done: int = 0
    version: int = 0                                      # global model version (aggregations so far)
    edge_state: dict = field(default_factory=dict)        # hierarchical: edge server -> its model's global part
    stopped_reason: str = ""
    last_loss: dict = field(default_factory=dict)         # client -> its last training loss (selectors read it)
    last_duration_s: dict = field(default_factory=dict)   # client -> its last round duration (s)
    charged_payload_bytes: Optional[int] = None           # ModelSplit.charged_payload_bytes

    def payload_bytes(self) -> int:
        """Bytes of the global part: what is broadcast and what each client uploads; as the learner
        charges it if it says (``charged_payload_bytes``), else the global tensors' bytes (dtype-aware)."""
        if self.charged_payload_bytes is not None:
            return self.charged_payload_bytes
        from ..learn.aggregate import state_nbytes

        return state_nbytes(self.global_state)


@dataclass
class ClientOutcome:
    client: int
    status: str = Status.OK         # ok | late | dropped | offline
    handle: Any = None              # training handle, set once the computation finished
    t_arrival_s: float = math.nan   # when the upload finished
    downloaded: bool = False        # the broadcast arrived in full
    start_global: dict = field(default_factory=dict)  # the global part the client downloaded
    start_version: int = 0          # its global version (staleness = version at aggregation - this)
    t_start_s: float = math.nan     # when its round began
    energy_j: float = 0.0
    stop_cause: Any = None          # a stop that arrived as an activity completed (the round ends after it)

    @property
    def arrived(self) -> bool:
        return self.status == Status.OK

    def result(self) -> Any:
        """The training result, measured (None if the client did not finish computing)."""
        return None if self.handle is None else self.handle.result()

    def trained(self) -> Any:
        """The training result as far as the aggregation needs it (trained state, weight, training
        loss; the held-out metrics may not be taken yet: :meth:`result`); None if the client did not
        finish computing."""
        if self.handle is None:
            return None
        trained = getattr(self.handle, "trained", None)
        return trained() if trained is not None else self.handle.result()


@dataclass(frozen=True)
class ClientUpdate:
    """One client's contribution to an aggregation (only the global part travels)."""

    client: int
    start: Mapping      # the global part the client downloaded
    params: Mapping     # the global part after its local update
    num_samples: float  # its training samples (the usual weight)
    staleness: int      # global versions since it downloaded (0 in synchronous rounds)
