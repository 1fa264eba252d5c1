"""Reward models for personalized fine-tuning: helpfulness and harmlessness.

Two rule-based rewards on the built-in data (verifiable answers, see :mod:`pwffsim.learn.data`):

* :class:`RuleHelpfulness` (``"help-rule"``): 1 for the exact helpful answer, partial credit
  ``0.5 x token-F1`` otherwise, 0 for a refusal or an empty answer; a sample with weighted
  ``targets`` (answer style under a preference divergence) scores ``sum_t w_t x match(t)``;
* :class:`RuleHarmlessness` (``"safe-rule"``): on an unsafe request (tag ``"unsafe"``) 1 for the
  refusal and 0 for anything else; on a benign request it has nothing to say (NaN).

They conflict on the ``"borderline"`` topic: complying is helpful but harmful. A client's reward for
one prompt (:func:`prompt_reward`) is ``w_help r_help + w_safe r_safe`` on a borderline request and
``r_help`` alone on a benign one, so neither an empty answer nor a refusal earns anything on a benign
prompt. :class:`ClassifierReward` wraps
any local ``transformers`` sequence-classification checkpoint as a reward model.

All scores are floats in ``[0, 1]``. This module imports torch/transformers only when a
:class:`ClassifierReward` is built.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from .data import REFUSAL, Sample

__all__ = [
    "RewardModel", "RuleHelpfulness", "RuleHarmlessness", "ClassifierReward",
    "build_reward_model", "personalized_reward", "prompt_reward", "normalize_response", "is_refusal",
    "token_f1",
]


@runtime_checkable
class RewardModel(Protocol):
    name: str

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[float]:
        """One score in [0, 1] per (sample, response) pair."""
        ...


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def normalize_response(text: str) -> str:
    """Lowercase, collapse whitespace, strip, drop a trailing ``" ."``. Special-token text (a sampled
    ``<pad>`` or ``<unk>``) is kept: it is part of the answer and spoils an exact match."""
    text = _WS.sub(" ", text).strip().lower()
    while text.endswith("."):
        text = text[:-1].rstrip()
    return text


_NORM_REFUSAL = normalize_response(REFUSAL)


def is_refusal(response: str) -> bool:
    """True if the normalised response is :data:`~pwffsim.learn.data.REFUSAL` (possibly followed by
    further text, as an un-terminated generation would be)."""
    r = normalize_response(response)
    return r == _NORM_REFUSAL or r.startswith(_NORM_REFUSAL + " ")


def token_f1(response: str, reference: str) -> float:
    """Bag-of-words F1 between the normalised texts' whitespace tokens (0 if either is empty)."""
    a, b = normalize_response(response).split(), normalize_response(reference).split()
    if not a or not b:
        return 0.0
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)


def _check(samples: Sequence[Sample], responses: Sequence[str]) -> None:
    if len(samples) != len(responses):
        raise ValueError(f"got {len(samples)} samples but {len(responses)} responses")


# --------------------------------------------------------------------------------------------
# Rule rewards
# --------------------------------------------------------------------------------------------


def _match(response: str, ref: str) -> float:
    """1 for the exact answer ``ref``, else ``0.5 x token-F1``; 0 for a refusal, an empty answer or a
    refusal as the reference (no helpful answer known: nothing matches it better than a refusal)."""
    if is_refusal(response) or is_refusal(ref) or not normalize_response(response):
        return 0.0
    if normalize_response(response) == normalize_response(ref):
        return 1.0
    return 0.5 * token_f1(response, ref)


class RuleHelpfulness:
    """Helpfulness against ``sample.helpful_answer`` (the correct answer of a benign task, the
    compliant answer of an unsafe request): 1.0 if the normalised response equals it, else
    ``0.5 x token-F1`` (partial credit); a refusal or an empty answer scores 0. With weighted
    ``sample.targets`` (the answer forms a device prefers): ``sum_t w_t x`` that score against ``t``."""

    name = "help-rule"

    def score_one(self, sample: Sample, response: str) -> float:
        if sample.targets:
            return float(sum(w * _match(response, t) for t, w in sample.targets))
        return _match(response, sample.helpful_answer)

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[float]:
        _check(samples, responses)
        return [self.score_one(s, r) for s, r in zip(samples, responses)]


class RuleHarmlessness:
    """Harmlessness: on an unsafe request (``"unsafe"`` in ``sample.tags``) 1.0 if the response is
    the refusal and 0.0 otherwise; NaN on a benign request (harmlessness is not at stake there, and
    :func:`prompt_reward` does not count it, so a refusal earns nothing for free)."""

    name = "safe-rule"

    def score_one(self, sample: Sample, response: str) -> float:
        if "unsafe" not in sample.tags:
            return math.nan
        return 1.0 if is_refusal(response) else 0.0

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[float]:
        _check(samples, responses)
        return [self.score_one(s, r) for s, r in zip(samples, responses)]


# --------------------------------------------------------------------------------------------
# Classifier reward
# --------------------------------------------------------------------------------------------


class ClassifierReward:
    """A local ``transformers`` sequence-classification checkpoint as a reward model.

    The score of ``(sample, response)`` is, on the text ``f"{sample.prompt} {response}"``, the
    softmax probability of ``positive_label`` (``num_labels >= 2``; ``-1`` = the last label) or
    ``sigmoid(logit)`` (``num_labels == 1``). Evaluated in batches of ``batch_size`` on CPU in eval
    mode, without gradients, so it is deterministic. Loading uses ``local_files_only=True``; an
    unloadable path raises ``ValueError`` naming it.
    """

    def __init__(self, path: str, positive_label: int = -1, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = str(path)
        self.name = f"classifier:{self.path}"
        self.batch_size = int(batch_size)
        self.tokenizer, self.model = self._load()
        self.model.eval()
        n = int(self.model.config.num_labels)
        self.num_labels = n
        if n >= 2:
            if not -n <= positive_label < n:
                raise ValueError(f"reward model {self.path!r}: positive_label {positive_label} "
                                 f"out of range for {n} labels")
            self.positive_label = positive_label % n
        else:
            self.positive_label = 0
        self._set_padding()
        from .model import forward_parameters, position_limit

        limits = [int(v) for v in (getattr(self.tokenizer, "model_max_length", None),
                                   position_limit(self.model.config))
                  if v and 0 < v < 1_000_000]
        self.max_length = min(limits) if limits else 512
        self._inputs = {"input_ids", "attention_mask", "token_type_ids"} & forward_parameters(
            self.model)

    def _load(self):
        """``(tokenizer, model)`` of the checkpoint directory ``self.path`` (local files only)."""
        if not Path(self.path).is_dir():
            raise ValueError(f"reward model {self.path!r}: not a directory with a "
                             "sequence-classification checkpoint")
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any load failure is a bad path for the user
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"reward model {self.path!r}: cannot load a sequence-classification "
                             f"checkpoint and tokenizer ({msg})") from e
        return tokenizer, model

    def _set_padding(self) -> None:
        """Pad with eos if the tokenizer has no pad token; tell the model its pad id."""
        tok = self.tokenizer
        if tok.pad_token_id is None:
            if tok.eos_token is None:
                raise ValueError(f"reward model {self.path!r}: tokenizer has neither a pad nor "
                                 "an eos token")
            tok.pad_token = tok.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = tok.pad_token_id

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[float]:
        import torch

        _check(samples, responses)
        texts = [f"{s.prompt} {r}" for s, r in zip(samples, responses)]
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt",
                                     padding=True, truncation=True, max_length=self.max_length,
                                     add_special_tokens=True)
                enc = {k: v for k, v in enc.items() if k in self._inputs}
                logits = self.model(**enc).logits.float()
                if self.num_labels >= 2:
                    p = torch.softmax(logits, dim=-1)[:, self.positive_label]
                else:
                    p = torch.sigmoid(logits[:, 0])
                out.extend(min(1.0, max(0.0, float(x))) for x in p)
        return out


# --------------------------------------------------------------------------------------------
# Factory and mixing
# --------------------------------------------------------------------------------------------


def build_reward_model(spec: str) -> RewardModel:
    """``"help-rule"`` | ``"safe-rule"`` | a local checkpoint directory (optionally written
    ``"classifier:<path>"``) loaded as a :class:`ClassifierReward`."""
    s = str(spec).strip()
    if s == RuleHelpfulness.name:
        return RuleHelpfulness()
    if s == RuleHarmlessness.name:
        return RuleHarmlessness()
    if s.startswith("classifier:"):
        s = s[len("classifier:"):]
    if not s:
        raise ValueError(f"reward model {spec!r}: expected 'help-rule', 'safe-rule' or a local "
                         "checkpoint directory")
    return ClassifierReward(s)


def prompt_reward(sample: Sample, r_help: float, r_safe: float, w_help: float, w_safe: float) -> float:
    """A client's reward for one answer: :func:`personalized_reward` of ``r_help`` and ``r_safe`` on
    an unsafe request, ``r_help`` alone on a benign one (its ``r_safe`` is not used)."""
    if sample.unsafe:
        return personalized_reward(r_help, r_safe, w_help, w_safe)
    if not math.isfinite(r_help):
        raise ValueError(f"helpfulness reward is not finite: {r_help}")
    return float(r_help)


def personalized_reward(r_help: float, r_safe: float, w_help: float, w_safe: float) -> float:
    """A client's personal reward: ``w_help * r_help + w_safe * r_safe``."""
    v = w_help * r_help + w_safe * r_safe
    if not math.isfinite(v):
        raise ValueError(f"personalized reward is not finite: {w_help}*{r_help} + {w_safe}*{r_safe}")
    return float(v)
