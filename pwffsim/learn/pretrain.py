"""Pretrain the shipped tiny base model (``pwffsim/assets/tiny-base``).

A tiny GPT-2 (the paper's base is GPT-2 scale) trained full-parameter on the *pretraining corpus*:
plain statements of the built-in facts (``"3 plus 4 is 7 ."``), packed into blocks separated by eos.
It never sees the ``question : ... answer :`` instruction format, so LoRA fine-tuning on the clients'
instruction data has something visible to learn. For the ``"borderline"`` topic the statements teach
both the compliant answers and the refusal sentence (``"a request to ... is harmful , sorry , ..."``),
so either behaviour is expressible with known words; which one a client wants is its preference.

Usage: ``python -m pwffsim.learn.pretrain OUT_DIR [--steps N] [--seed S]`` (CPU, well under 2 min).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .data import TOPICS, pretraining_statements
from .tokenizer import build_tokenizer

#: The shipped tiny base model (model.safetensors + config + tokenizer), made by this module.
DEFAULT_BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-base"

#: Architecture of the shipped tiny base.
TINY_CONFIG = dict(n_layer=2, n_head=4, n_embd=64, n_positions=128)


def _tiny_config(tokenizer, **overrides):
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


def pretrain_tiny_base(out_dir, steps: int = 2500, seed: int = 0, batch_size: int = 32,
                       block_size: int = 64, learning_rate: float = 3e-3,
                       n_statements: int = 60_000, verbose: bool = True) -> Path:
    """Build the tokenizer and a tiny GPT-2, train it full-parameter on the pretraining statements
    (AdamW, warmup + cosine decay), save model (safetensors) + tokenizer + ``pretrain_stats.json``
    to ``out_dir`` with ``save_pretrained``. Returns ``Path(out_dir)``."""
    from transformers import GPT2LMHeadModel

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(model_max_length=TINY_CONFIG["n_positions"])
    model = GPT2LMHeadModel(_tiny_config(tokenizer))
    stream = _token_stream(tokenizer, n_statements, seed)
    gen = torch.Generator().manual_seed(seed)
    losses = _train_on_stream(model, stream, gen, steps, batch_size, block_size, learning_rate,
                              verbose, t0)
    wall = time.perf_counter() - t0
    model.eval()
    answer_loss = statement_answer_loss(model, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    stats = dict(steps=steps, seed=seed, batch_size=batch_size, block_size=block_size,
                 learning_rate=learning_rate, wall_time_s=round(wall, 2),
                 final_loss_mean_last_50=round(float(np.mean(losses[-50:])), 4),
                 statement_answer_loss=answer_loss,
                 num_parameters=sum(p.numel() for p in model.parameters()),
                 torch_threads=torch.get_num_threads())
    (out_dir / "pretrain_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if verbose:
        print(json.dumps(stats, indent=2))
    return out_dir


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pwffsim.learn.pretrain",
                                 description="Pretrain the tiny base model and save it to OUT_DIR.")
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    pretrain_tiny_base(a.out_dir, steps=a.steps, seed=a.seed)


if __name__ == "__main__":
    main()
