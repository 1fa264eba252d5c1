"""Pretrain the shipped base models (``pwffsim/assets/tiny-base`` and ``small-base``).

A GPT-2 (the paper's base is GPT-2 scale) trained full-parameter on the *pretraining corpus*:
plain statements of the built-in facts (``"3 plus 4 is 7 ."``), packed into blocks separated by eos.
It never sees the ``question : ... answer :`` instruction format, so LoRA fine-tuning on the clients'
instruction data has something visible to learn. For the ``"borderline"`` topic the statements teach
both the compliant answers and the refusal sentence (``"a request to ... is harmful , sorry , ..."``),
so either behaviour is expressible with known words; which one a client wants is its preference.

Two recipes (:data:`RECIPES`), the same tokenizer (:func:`.tokenizer.build_tokenizer`, 261 tokens),
128 positions, tied embeddings, no dropout, AdamW with warmup + cosine decay:

* ``"tiny"`` (``model.source = "builtin-tiny"``): 2 layers x 64 wide, 124 992 parameters; 2500 steps
  of 32 x 64 tokens at lr 3e-3; fp32 weights (0.5 MB).
* ``"small"`` (``"builtin-small"``): 4 layers x 256 wide, 4 heads, 3 259 136 parameters
  (:func:`gpt2_parameter_count`); 800 steps of 16 x 64 tokens at lr 3e-3 (see
  ``assets/small-base/pretrain_stats.json`` for its wall time and losses); weights saved in fp16
  (6.5 MB; loaded as fp32 by :func:`pwffsim.learn.model.load_base`), and its statement loss is
  measured on the fp16-rounded weights that ship. Alone on the 2 cores it runs 3.7 steps/s (about
  3.6 min); the shipped one was built on a machine shared with four other jobs: 0.78 steps/s, 1031 s.
  It is **under-trained on arithmetic**: statement answer loss (nats, 512 fresh statements) addition
  1.32, subtraction 1.18, count 0.45, reverse 0.60, larger 0.13, capital / color / borderline
  <= 0.012 (mean 0.46; the tiny base, which saw 10x the tokens: mean 0.015, every topic <= 0.04).
  More steps (``--steps``) are the lever; the facts' words and the statement format it knows.

Deterministic from the seed on a given machine and torch thread count (CPU kernels may reduce in
another order with another thread count, moving the last bits).

Usage: ``pwffsim pretrain OUT_DIR [--size tiny|small] [--steps N] [--seed S]`` or
``python -m pwffsim.learn.pretrain OUT_DIR [...]`` (CPU).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .bases import builtin_dir
from .data import TOPICS, pretraining_statements
from .tokenizer import build_tokenizer

#: The shipped tiny base model (model.safetensors + config + tokenizer), made by this module.
DEFAULT_BASE_DIR = builtin_dir("builtin-tiny")
#: The shipped small base model (fp16 weights), made by this module with ``size="small"``.
SMALL_BASE_DIR = builtin_dir("builtin-small")

#: Architecture of the shipped tiny base.
TINY_CONFIG = dict(n_layer=2, n_head=4, n_embd=64, n_positions=128)
#: Architecture of the shipped small base.
SMALL_CONFIG = dict(n_layer=4, n_head=4, n_embd=256, n_positions=128)


@dataclass(frozen=True)
class Recipe:
    """How one base is pre-trained: architecture, optimisation and the stored weights' dtype."""
    config: dict = field(default_factory=lambda: dict(TINY_CONFIG))
    steps: int = 2500
    batch_size: int = 32          # blocks per step
    block_size: int = 64          # tokens per block
    learning_rate: float = 3e-3   # peak of warmup_cosine_lr
    n_statements: int = 60_000    # size of the statement corpus the blocks are drawn from
    weights_dtype: str = "fp32"   # "fp32" or "fp16" (stored; always loaded as fp32)
    eval_statements: int = 512    # fresh statements the saved weights' answer loss is measured on


#: ``pwffsim pretrain --size NAME`` -> its recipe.
RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(),
    "small": Recipe(config=dict(SMALL_CONFIG), steps=800, batch_size=16, learning_rate=3e-3,
                    weights_dtype="fp16"),
}


def gpt2_parameter_count(n_layer: int, n_embd: int, n_positions: int, vocab_size: int,
                         n_inner: int | None = None) -> int:
    """Parameters of a GPT-2 LM with tied embeddings, by hand: token and position embeddings, per
    block two layer norms (2 x 2d), the fused qkv (d x 3d + 3d), attention out (d x d + d), MLP in
    (d x f + f) and out (f x d + d), f = 4d by default, and the final layer norm (2d)."""
    d, f = n_embd, n_inner or 4 * n_embd
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    return vocab_size * d + n_positions * d + n_layer * block + 2 * d


def _gpt2_config(tokenizer, **overrides):
    from transformers import GPT2Config

    kw = dict(TINY_CONFIG)
    kw.update(overrides)
    return GPT2Config(
        vocab_size=len(tokenizer),
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def _token_stream(tokenizer, n_statements: int, seed: int) -> torch.Tensor:
    stmts = pretraining_statements(n_statements, seed=seed)
    eos = tokenizer.eos_token_id
    ids = tokenizer(stmts, add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for row in ids for t in (*row, eos)), dtype=np.int64)
    return torch.from_numpy(flat)


@torch.no_grad()
def statement_answer_loss(model, tokenizer, n: int = 512, seed: int = 12345) -> dict[str, float]:
    """Mean cross-entropy (nats) of each statement's answer (the words after the last ``is``),
    per topic, on fresh statements: low means the base model knows the facts."""
    model.eval()
    out = {}
    for t in TOPICS:
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(n // len(TOPICS)):
            words = t.statement(rng).split()
            k = len(words) - 1 - words[::-1].index("is")  # position of the last "is"
            ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
            ids = [tokenizer.eos_token_id] + ids
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(x).logits[0, :-1], -1)
            tgt = x[0, 1:]
            # answer tokens are words k+1 .. len-2 (excluding the final "."); in ids they sit at
            # positions k+2 .. len-1 (eos prepended), predicted from positions k+1 .. len-2.
            sel = range(k + 1, len(words) - 1)
            losses.append(float(-torch.stack([logp[j, tgt[j]] for j in sel]).mean()))
        out[t.name] = float(np.mean(losses))
    return out


def warmup_cosine_lr(step: int, steps: int, peak: float) -> float:
    """Learning rate at ``step`` of ``steps``: linear warmup over the first 5% (at least one step)
    to ``peak``, then cosine decay to ``0.1 * peak``."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _train_on_stream(model, stream: torch.Tensor, gen: torch.Generator, steps: int,
                     batch_size: int, block_size: int, learning_rate: float, verbose: bool,
                     t0: float) -> list[float]:
    """Full-parameter AdamW on random ``block_size`` windows of the token ``stream`` (drawn from
    ``gen``), :func:`warmup_cosine_lr`, gradient norm clipped to 1; the loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01,
                            betas=(0.9, 0.98))
    offs = torch.arange(block_size)
    model.train()
    ema = None
    losses = []
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(s, steps, learning_rate)
        starts = torch.randint(0, len(stream) - block_size, (batch_size,), generator=gen)
        x = stream[starts[:, None] + offs]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        li = loss.item()
        losses.append(li)
        ema = li if ema is None else 0.98 * ema + 0.02 * li
        if verbose and (s % 100 == 0 or s == steps - 1):
            print(f"step {s:5d}  loss {li:.4f}  ema {ema:.4f}  {time.perf_counter() - t0:6.1f}s",
                  flush=True)
    return losses


def _save(model, tokenizer, out_dir: Path, weights_dtype: str) -> None:
    """``save_pretrained`` (safetensors) of the model in ``weights_dtype`` and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights_dtype == "fp16":
        model = model.half()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def pretrain_base(out_dir, size: str = "tiny", steps: int | None = None, seed: int = 0,
                  verbose: bool = True, **overrides) -> Path:
    """Build the tokenizer and the GPT-2 of recipe ``RECIPES[size]`` (``steps`` and any other
    :class:`Recipe` field in ``overrides`` replace the recipe's), train it full-parameter on the
    pretraining statements, save model (safetensors, the recipe's weights dtype) + tokenizer +
    ``pretrain_stats.json`` to ``out_dir``. The statement answer loss in the stats is that of the
    saved weights (fp16-rounded for ``"small"``). Returns ``Path(out_dir)``."""
    from transformers import GPT2LMHeadModel

    if size not in RECIPES:
        raise ValueError(f"unknown base size {size!r}; one of {sorted(RECIPES)}")
    rc = replace(RECIPES[size], **({"steps": steps} if steps is not None else {}), **overrides)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(model_max_length=rc.config["n_positions"])
    model = GPT2LMHeadModel(_gpt2_config(tokenizer, **rc.config))
    stream = _token_stream(tokenizer, rc.n_statements, seed)
    gen = torch.Generator().manual_seed(seed)
    losses = _train_on_stream(model, stream, gen, rc.steps, rc.batch_size, rc.block_size,
                              rc.learning_rate, verbose, t0)
    wall = time.perf_counter() - t0
    _save(model, tokenizer, out_dir, rc.weights_dtype)
    model = model.float().eval()  # the saved (possibly fp16-rounded) weights, in fp32
    answer_loss = statement_answer_loss(model, tokenizer, n=rc.eval_statements)
    stats = dict(size=size, steps=rc.steps, seed=seed, batch_size=rc.batch_size,
                 block_size=rc.block_size, learning_rate=rc.learning_rate,
                 weights_dtype=rc.weights_dtype, wall_time_s=round(wall, 2),
                 steps_per_s=round(rc.steps / wall, 3),
                 final_loss_mean_last_50=round(float(np.mean(losses[-50:])), 4),
                 statement_answer_loss=answer_loss,
                 statement_answer_loss_mean=round(float(np.mean(list(answer_loss.values()))), 5),
                 num_parameters=sum(p.numel() for p in model.parameters()),
                 torch_threads=torch.get_num_threads())
    (out_dir / "pretrain_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if verbose:
        print(json.dumps(stats, indent=2))
    return out_dir


def pretrain_tiny_base(out_dir, steps: int = 2500, seed: int = 0, batch_size: int = 32,
                       block_size: int = 64, learning_rate: float = 3e-3,
                       n_statements: int = 60_000, verbose: bool = True) -> Path:
    """:func:`pretrain_base` of the ``"tiny"`` recipe (the shipped ``builtin-tiny``)."""
    return pretrain_base(out_dir, "tiny", steps=steps, seed=seed, verbose=verbose,
                         batch_size=batch_size, block_size=block_size,
                         learning_rate=learning_rate, n_statements=n_statements)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pwffsim.learn.pretrain",
                                 description="Pretrain a base model and save it to OUT_DIR.")
    ap.add_argument("out_dir")
    ap.add_argument("--size", choices=sorted(RECIPES), default="tiny")
    ap.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    pretrain_base(a.out_dir, a.size, steps=a.steps, seed=a.seed)


if __name__ == "__main__":
    main()
