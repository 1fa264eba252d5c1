"""The built-in word-level tokenizer (closed vocabulary of the built-in data generator).

Built with the ``tokenizers`` library (WordLevel model, whitespace-split pre-tokenizer) and wrapped
as a ``transformers.PreTrainedTokenizerFast``, so it saves and loads with ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` like any Hugging Face tokenizer. Special tokens: ``<pad>`` (id 0),
``<unk>``, ``<bos>``, ``<eos>``. No special tokens are added automatically on encode.
"""
from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .data import vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def build_tokenizer(words: Sequence[str] | None = None,
                    model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (default: :func:`pwffsim.learn.data.vocabulary`)."""
    words = list(vocabulary() if words is None else words)
    vocab: dict[str, int] = {}
    for w in list(SPECIAL_TOKENS) + words:
        if any(ch.isspace() for ch in w) or not w:
            raise ValueError(f"vocabulary word {w!r} is empty or contains whitespace")
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
