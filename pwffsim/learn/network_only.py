"""Network-only mode (``learning.mode = "none"``): a learner that trains nothing.

For large topology and policy sweeps the network is the subject and the learning is not: this
learner follows the :class:`~pwffsim.learn.contract.Learner` protocol but runs no model and never
imports torch. Every update is charged what the real learner would charge for the same scenario:

* **FLOPs and token positions** of one local update (``estimate_cost``) and **payload bytes** of
  the global groups (``charged_payload_bytes``) come from the *charged* model: ``model.cost_model``
  if set, else the trained model ``model.source`` (as in ``learning.mode = "train"``). They are
  counted exactly as the real learner counts them (:mod:`pwffsim.learn.costmodel`, torch's ``meta``
  device), once, **in a subprocess** (so this process stays torch-free) and cached as a small JSON
  file in ``$PWFFSIM_CACHE_DIR`` (default ``~/.cache/pwffsim/charged``), keyed by everything the
  count depends on (model section, cost-model and checkpoint files' contents, the update's
  shape: seq_len, batch, steps, alignment and metric settings, one client or more). A sweep pays
  the count once; a cache hit costs a file read.
* **num_samples** is the data spec's training-set size of the client (its FedAvg weight).
* The **trainable state is empty** (``{}``): nothing global or personal is held per device, the
  aggregation policies have nothing to average, and the payload of a transfer is the charged bytes.
* **Learning metrics are NaN** (eval losses, rewards, objective). ``train_loss`` is NaN too, except
  with ``stand_in_loss`` set (the builder sets 1.0 under ``fl.selection = "oort"``): a constant,
  so Oort's statistical utility ``|B_i| * loss`` becomes the sample count and its ranking is by
  sample count and round duration (its system factor) alone.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .contract import TrainJob, TrainResult

#: Bump when what is counted (or how) changes: old cache entries are then ignored.
CACHE_VERSION = 1


@dataclass(frozen=True)
class ChargedCounts:
    """What one update of the charged model costs: FLOPs, tokens, parameters per group."""
    name: str
    flops: float
    tokens: int
    group_params: dict[str, int]
    dtype_bytes: int
    base_params: int

    def payload_bytes(self, groups: Sequence[str]) -> int:
        return int(sum(self.group_params[g] for g in set(groups))) * self.dtype_bytes


def cache_dir() -> Path:
    """Where counts are cached: ``$PWFFSIM_CACHE_DIR`` or ``~/.cache/pwffsim/charged``."""
    env = os.environ.get("PWFFSIM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pwffsim" / "charged"


def _file_digest(path: str | None) -> str | None:
    """sha256 of a file (a directory: of its config.json and tokenizer files); None if none."""
    if not path:
        return None
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(q for q in p.glob("*") if q.suffix == ".json") if p.is_dir() else []
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest() if files else None


def count_key(specs: Mapping[str, Mapping[str, Any]]) -> str:
    """The cache key of the counts of ``specs`` (``model``/``data``/``train`` spec keyword dicts):
    what the count depends on, not the seed, the data's sizes or the number of clients beyond 2."""
    from .costconfig import cost_model_path, is_shipped
    from .filedata import spec_files

    model = {k: v for k, v in specs["model"].items() if k != "seed"}
    data = {k: v for k, v in specs["data"].items()
            if k not in ("seed", "num_clients", "train_samples_per_client", "dirichlet_alpha")}
    cm = model.get("cost_model")
    what = {"version": CACHE_VERSION, "model": model, "data": data, "train": dict(specs["train"]),
            "several_clients": int(specs["data"]["num_clients"]) > 1,
            "cost_model_file": _file_digest(str(cost_model_path(cm))) if cm else None,
            "source_files": None if is_shipped(str(model.get("source"))) else _file_digest(model.get("source")),
            **({"data_files": [_file_digest(p) for p in spec_files(specs["data"])]} if spec_files(specs["data"]) else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def count_in_process(specs: Mapping[str, Mapping[str, Any]]) -> dict:
    """The counts with torch, in this process: the real learner's own (built for at most two
    clients: the counts do not depend on more)."""
    from .filedata import make_data_spec
    from .model import ModelSpec
    from .train import Learner, TrainSpec

    m = dict(specs["model"])
    if m.get("target_modules") is not None:
        m["target_modules"] = tuple(m["target_modules"])
    d = dict(specs["data"])
    n = d["train_samples_per_client"]
    d["train_samples_per_client"] = int(n if isinstance(n, int) else min(n))
    d["num_clients"] = min(int(d["num_clients"]), 2)
    if d.get("split") == "by-field":  # the counts need only the file's prompt length, any two clients
        d["split"] = "iid"
    learner = Learner(ModelSpec(**m), make_data_spec(**d), TrainSpec(**specs["train"]), torch_threads=1)
    flops, tokens = learner.estimate_cost()
    ch = learner.charged
    return {"name": ch.name, "flops": float(flops), "tokens": int(tokens), "group_params": dict(ch.group_params),
            "dtype_bytes": int(ch.dtype_bytes), "base_params": int(ch.base_params)}


def charged_counts(specs: Mapping[str, Mapping[str, Any]]) -> ChargedCounts:
    """The counts of ``specs``, from the cache or counted in a subprocess (``python -m
    pwffsim.learn.network_only``, which imports torch) and cached. ``ValueError`` with the
    subprocess's last line if counting fails (e.g. a bad cost model)."""
    path = cache_dir() / f"{count_key(specs)}.json"
    try:
        return ChargedCounts(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    proc = subprocess.run([sys.executable, "-m", "pwffsim.learn.network_only"], input=json.dumps(specs),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ValueError(f"network-only mode: counting the charged model failed: {lines[-1] if lines else '?'}")
    counts = json.loads(proc.stdout)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(counts, f, sort_keys=True)
    os.replace(tmp, path)  # atomic: parallel sweeps may race, each writes the same counts
    return ChargedCounts(**counts)


class NetworkOnlyLearner:
    """A :class:`~pwffsim.learn.contract.Learner` (and ``ChargesPayload``) that trains nothing:
    see the module docstring."""

    def __init__(self, counts: ChargedCounts, train_samples_per_client: int | Sequence[int], num_clients: int,
                 stand_in_loss: float = math.nan, local_scheme: str = "joint"):
        self.counts = counts
        self.local_scheme = local_scheme  # counted in ``counts`` (the train spec carries it)
        self._samples = train_samples_per_client
        self.num_clients = int(num_clients)
        self.stand_in_loss = float(stand_in_loss)

    def initial_state(self) -> dict:
        return {}

    def parameter_group(self, key: str) -> str:
        raise KeyError(key)  # the state has no keys

    def estimate_cost(self) -> tuple[float, int]:
        return self.counts.flops, self.counts.tokens

    def charged_payload_bytes(self, groups) -> int:
        return self.counts.payload_bytes(groups)

    def num_samples(self, client: int) -> int:
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client {client} out of range 0..{self.num_clients - 1}")
        n = self._samples
        return int(n) if isinstance(n, int) else int(n[client])

    def run(self, job: TrainJob) -> TrainResult:
        return TrainResult(client=job.client, round=job.round, state={}, num_samples=self.num_samples(job.client),
                           train_loss=self.stand_in_loss, eval_loss=math.nan, flops=self.counts.flops,
                           tokens=self.counts.tokens,
                           personal_state={} if self.local_scheme == "ditto" else None)

    def evaluate_metrics(self, state, client: int, pref_help: float, pref_safe: float) -> dict:
        nan = math.nan
        return {"eval_loss": nan, "eval_loss_others": nan, "reward_help": nan, "reward_safe": nan, "objective": nan}


def _main() -> None:  # pragma: no cover - run as a subprocess by charged_counts
    specs = json.loads(sys.stdin.read())
    try:
        counts = count_in_process(specs)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(1)
    print(json.dumps(counts))


if __name__ == "__main__":  # pragma: no cover
    _main()
