"""Each client's data, made on demand from the client's own seed.

A client's topic mix, training and held-out samples are drawn from seed streams of its own
(:func:`client_data`), so the learner makes them on first use (:mod:`pwffsim.learn.batches`) and a
client never used costs nothing: a client's data does not depend on the other clients, on their
number, or on when and in which order clients are made. ``eval_loss_others`` evaluates a client's
model on the held-out data of a few reference clients drawn once from the seed
(:func:`reference_clients`), not on the whole population.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import TOPICS, DataSpec, Sample
from .preferences import Preference, divergent_preference

__all__ = ["ClientData", "build_client_datasets", "client_data", "client_eval", "client_metric_samples",
           "client_preference", "reference_clients", "topic_mix"]


@dataclass
class ClientData:
    client: int
    topic_weights: np.ndarray       # the Dirichlet draw, shape (num_topics,)
    train: list[Sample]
    eval: list[Sample]


def _dirichlet(rng: np.random.Generator, alpha: float, k: int) -> np.ndarray:
    w = rng.dirichlet(np.full(k, alpha))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:  # tiny alpha can underflow on old numpy
        w = np.zeros(k)
        w[int(rng.integers(k))] = 1.0
    return w / w.sum()


def _draw(rng: np.random.Generator, weights: np.ndarray, n: int, refusal_share: float = 0.5,
          concise_share: float | None = None) -> list[Sample]:
    which = rng.choice(len(weights), size=n, p=weights)
    return [TOPICS[int(k)].sample(rng, refusal_share, concise_share) for k in which]


#: Seed-stream tags: a client's data (:func:`client_data`) and the reference clients' draw.
STREAM_CLIENT_DATA, STREAM_REFERENCE = 0xDA7A, 0x0E1F
_MIX, _TRAIN, _EVAL, _METRIC = 0, 1, 2, 3  # the parts of a client's stream


def _stream(spec: DataSpec, client: int, part: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, STREAM_CLIENT_DATA, client, part]))


def topic_mix(spec: DataSpec, client: int) -> np.ndarray:
    """``client``'s topic mix ~ Dirichlet(alpha * 1), shape ``(num_topics,)``."""
    return _dirichlet(_stream(spec, client, _MIX), spec.dirichlet_alpha, spec.num_topics)


def client_preference(spec: DataSpec, client: int) -> Preference | None:
    """``client``'s weights under ``spec.preference_divergence``
    (:func:`~pwffsim.learn.preferences.divergent_preference`); None without a divergence."""
    d = spec.preference_divergence
    return None if d is None else divergent_preference(d, spec.seed, client)


def _shares(spec: DataSpec, client: int) -> tuple[float, float | None]:
    """``(refusal_share, concise_share)`` of ``client``'s samples: its ``w_safe`` and ``w_concise``
    under a divergence, else the spec's refusal share and the original (concise) answers."""
    pref = client_preference(spec, client)
    if pref is None:
        return spec.borderline_refusal_share, None
    return pref.w_safe, pref.w_concise


def client_eval(spec: DataSpec, client: int) -> list[Sample]:
    """``client``'s held-out samples (as in :func:`client_data`, without making its training set)."""
    return _draw(_stream(spec, client, _EVAL), topic_mix(spec, client),
                 spec.eval_samples_per_client, *_shares(spec, client))


def client_metric_samples(spec: DataSpec, client: int, n: int) -> list[Sample]:
    """The ``n`` held-out prompts ``client`` is scored on (greedy reward metrics), stratified so every
    client is scored on both preference-dependent families whatever its topic mix: ``n // 2``
    borderline requests (uniform over the unsafe topics; none if the spec has none, or if ``n < 2``)
    and the rest benign, from its topic mix restricted to the benign topics; drawn from part 3 of its
    own stream (so they do not change its training or held-out data), borderline ones first."""
    if n <= 0:
        return []
    topics = TOPICS[:spec.num_topics]
    unsafe = np.array(["unsafe" in t.tags for t in topics])
    mix = topic_mix(spec, client)
    n_unsafe = n // 2 if unsafe.any() and (~unsafe).any() else (n if unsafe.all() else 0)
    rng = _stream(spec, client, _METRIC)
    shares = _shares(spec, client)
    out = _draw(rng, unsafe / unsafe.sum(), n_unsafe, *shares) if n_unsafe else []
    if n > n_unsafe:
        benign = np.where(unsafe, 0.0, mix)
        out += _draw(rng, benign / benign.sum(), n - n_unsafe, *shares)
    return out


def client_data(spec: DataSpec, client: int) -> ClientData:
    """Client ``client``'s non-IID data, made from its own seed streams only,
    ``SeedSequence([spec.seed, STREAM_CLIENT_DATA, client, part])``: its topic mix ~ Dirichlet(alpha
    * 1) (part 0), then the topics and samples of its ``spec.train_samples(client)`` training
    samples (part 1) and of its held-out samples (part 2) from that mix. So a client's data does not
    depend on the other clients, their number, or when or in which order clients are made, and its
    held-out set not on its training-set size. Under a preference divergence its samples follow its
    weights (:func:`client_preference`; :meth:`~pwffsim.learn.data.Topic.sample`). (This per-client, per-part seeding replaced one
    stream per client for mix, train and eval in turn; the data changed once with it.)"""
    if not 0 <= client < spec.num_clients:
        raise ValueError(f"client {client} out of range 0..{spec.num_clients - 1}")
    w = topic_mix(spec, client)
    train = _draw(_stream(spec, client, _TRAIN), w, spec.train_samples(client), *_shares(spec, client))
    return ClientData(client=client, topic_weights=w, train=train, eval=client_eval(spec, client))


def build_client_datasets(spec: DataSpec) -> list[ClientData]:
    """Every client's :func:`client_data`, eagerly (the learner makes them on first use instead)."""
    return [client_data(spec, c) for c in range(spec.num_clients)]


def reference_clients(spec: DataSpec, client: int) -> list[int]:
    """The clients whose held-out data ``client``'s model is also evaluated on (``eval_loss_others``):
    one fixed draw of ``M + 1`` distinct clients from ``spec.seed`` (M = ``spec.reference_clients``;
    all clients if there are fewer), in drawn order, without ``client``, the first M. The same few
    clients serve every client, so the pool costs O(M), not O(population); empty for one client."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, STREAM_REFERENCE]))
    m = spec.reference_clients
    drawn = rng.choice(spec.num_clients, size=min(m + 1, spec.num_clients), replace=False)
    return [int(r) for r in drawn if r != client][:m]
