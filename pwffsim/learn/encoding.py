"""Samples to token rows: prompt + response + eos, the loss on the response only."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .data import Sample


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_samples(samples: Sequence[Sample], tokenizer, seq_len: int):
    """``(input_ids, labels)``, both LongTensor ``[n, seq_len]``.

    Each row is prompt tokens + response tokens + eos, right-padded with the pad token (eos if the
    tokenizer has none) or truncated to ``seq_len``. ``labels`` equal ``input_ids`` on the response
    and eos and are -100 on the prompt and the padding, so the loss is on the response only (the
    model shifts labels internally). The response is encoded as ``" " + response`` so that
    byte-level BPE tokenizers see the same word boundary as in the joined text.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    pairs = [(_ids(tokenizer, s.prompt), _ids(tokenizer, " " + s.response)) for s in samples]
    return rows_from_ids(pairs, seq_len, eos, pad)


def rows_from_ids(pairs: Sequence[tuple[list[int], list[int]]], seq_len: int, eos: int, pad: int):
    """:func:`encode_samples` from the ``(prompt ids, " " + response ids)`` of each sample."""
    import torch

    ids, labels = [], []
    for p, r in pairs:
        r = [*r, eos]
        row = (p + r)[:seq_len]
        lo, hi = min(len(p), seq_len), len(row)
        ids.append(row + [pad] * (seq_len - len(row)))
        labels.append([-100] * lo + row[lo:hi] + [-100] * (seq_len - hi))
    shape = (len(pairs), seq_len)
    return (torch.tensor(ids, dtype=torch.long).reshape(shape),
            torch.tensor(labels, dtype=torch.long).reshape(shape))


def encoded_length(sample: Sample, tokenizer) -> int:
    """Untruncated length of a sample's row (prompt + response + eos) in tokens."""
    return len(_ids(tokenizer, sample.prompt)) + len(_ids(tokenizer, " " + sample.response)) + 1
