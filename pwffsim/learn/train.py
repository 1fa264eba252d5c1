"""One client's local update (LoRA fine-tuning on its instruction data) and its analytic cost.

The learning side knows nothing about simulated time and never imports simpy: the simulator turns
the FLOPs reported here into compute time and energy with a device profile.

Reproducibility: :meth:`Learner.run` depends only on the specs and the job. It seeds torch with
``job.seed``, samples batches from a ``torch.Generator`` seeded with ``job.seed``, loads
``job.start_state`` into the (reused) peft model by direct parameter copies and builds a new
AdamW optimizer per job, so neither earlier calls nor the process running it matter. Bit-identical
results across processes additionally need the same torch build and thread count (``torch_threads``,
default 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from .data import ClientData, DataSpec, build_client_datasets, encode_samples, encoded_length
from .model import ModelSpec, build_peft_model


@dataclass(frozen=True)
class TrainSpec:
    local_steps: int = 5
    batch_size: int = 8
    seq_len: int = 32
    learning_rate: float = 3e-3
    eval_batches: int = 1  # 0 = no eval (eval_loss nan)

    def __post_init__(self) -> None:
        if self.local_steps < 0:
            raise ValueError(f"local_steps must be >= 0, got {self.local_steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.eval_batches < 0:
            raise ValueError(f"eval_batches must be >= 0, got {self.eval_batches}")


@dataclass
class TrainJob:
    client: int
    round: int
    seed: int
    start_state: dict[str, Tensor]  # trainable (peft) state, keys as get_peft_model_state_dict


@dataclass
class TrainResult:
    client: int
    round: int
    state: dict[str, Tensor]  # trained trainable state (cpu clones), same keys
    num_samples: int          # client's train set size (aggregation weight)
    train_loss: float         # mean loss over the local steps (nan if local_steps == 0)
    eval_loss: float          # on the client's held-out eval set after training (nan if no eval)
    flops: float              # cost of this update (training + eval forward)
    tokens: int


def _matmul_weight_params(model: nn.Module) -> int:
    """Parameters of every matmul weight: nn.Linear (incl. LoRA A/B and lm_head) and transformers'
    Conv1D; embedding lookups excluded. A tied lm_head counts (it is a matmul)."""
    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))


class Learner:
    """Runs clients' local updates on one reused peft model.

    FLOPs model (analytic; :meth:`estimate_cost` equals what :meth:`run` reports)::

        P_mm   = parameters of every matmul weight (Linear/Conv1D incl. LoRA A/B and lm_head,
                 not embedding lookups)
        fwd    = 2 * P_mm + 2 * n_layer * seq_len * d_model        per token (Kaplan et al. 2020:
                 2 FLOPs per weight per token, plus the attention scores and weighted sum)
        bwd    = fwd + 2 * P_trainable                              per token (activation gradients
                 cost a forward; weight gradients only for trainable weights, frozen need none)
        tokens_train = local_steps * batch_size * seq_len  (padding included: it is computed)
        tokens_eval  = eval_batches * batch_size * seq_len
        flops  = tokens_train * (fwd + bwd) + tokens_eval * fwd
        tokens = tokens_train + tokens_eval

    Eval uses the client's held-out eval samples in their fixed order, cycled to fill
    ``eval_batches * batch_size`` rows; ``eval_loss`` is the token-weighted mean over them.
    The optimizer is AdamW (no weight decay) at ``train_spec.learning_rate``.
    """

    def __init__(self, model_spec: ModelSpec, data_spec: DataSpec, train_spec: TrainSpec,
                 torch_threads: int | None = 1):
        from peft import get_peft_model_state_dict

        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.model_spec, self.data_spec, self.train_spec = model_spec, data_spec, train_spec
        self.model, self.tokenizer = build_peft_model(model_spec)
        self.model.eval()
        cfg = self.model.config
        n_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if n_pos is not None and train_spec.seq_len > n_pos:
            raise ValueError(f"seq_len {train_spec.seq_len} exceeds the model's {n_pos} positions")
        self.clients: list[ClientData] = build_client_datasets(data_spec)

        ts = train_spec
        longest = max(encoded_length(s, self.tokenizer)
                      for c in self.clients for s in (*c.train, *c.eval))
        if longest > ts.seq_len:
            raise ValueError(f"seq_len {ts.seq_len} is too short: the longest sample needs "
                             f"{longest} tokens (prompt + response + eos)")
        # Tokenise once: per client, train tensors and the (cycled) eval rows.
        n_eval_rows = ts.eval_batches * ts.batch_size
        self._train: list[tuple[Tensor, Tensor]] = []
        self._eval: list[tuple[Tensor, Tensor]] = []
        for c in self.clients:
            self._train.append(encode_samples(c.train, self.tokenizer, ts.seq_len))
            ev = [c.eval[i % len(c.eval)] for i in range(n_eval_rows)]
            self._eval.append(encode_samples(ev, self.tokenizer, ts.seq_len))

        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._initial = {k: v.detach().cpu().clone()
                         for k, v in get_peft_model_state_dict(self.model).items()}
        self._keys = frozenset(self._initial)
        # Direct key -> parameter map (peft's state-dict keys drop the adapter name), so that loading
        # and extracting a state per job is a plain copy, without peft's per-call config checks.
        adapter = getattr(self.model, "active_adapter", "default")
        self._params: dict[str, torch.nn.Parameter] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                self._params[name.replace(f".{adapter}.", ".")] = p
        if set(self._params) != self._keys:
            raise ValueError(f"trainable parameters do not match peft's state dict: "
                             f"{sorted(set(self._params) ^ self._keys)[:4]}")

        # Cost model.
        n_layer = int(cfg.num_hidden_layers)
        d_model = int(cfg.hidden_size)
        p_mm = _matmul_weight_params(self.model)
        p_tr = sum(p.numel() for p in self._trainable)
        fwd = 2.0 * p_mm + 2.0 * n_layer * ts.seq_len * d_model
        bwd = fwd + 2.0 * p_tr
        t_train = ts.local_steps * ts.batch_size * ts.seq_len
        t_eval = ts.eval_batches * ts.batch_size * ts.seq_len
        self.cost_breakdown = dict(
            matmul_weight_params=p_mm, trainable_params=p_tr, n_layer=n_layer, d_model=d_model,
            forward_flops_per_token=fwd, backward_flops_per_token=bwd,
            train_tokens=t_train, eval_tokens=t_eval)
        self._cost = (float(t_train * (fwd + bwd) + t_eval * fwd), int(t_train + t_eval))

    # ---------------------------------------------------------------------------------- info
    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.model.parameters())
        return {"total": int(total), "trainable": int(sum(p.numel() for p in self._trainable))}

    def num_samples(self, client: int) -> int:
        return len(self.clients[self._check_client(client)].train)

    def client_tensors(self, client: int) -> tuple[Tensor, Tensor]:
        """``(input_ids, labels)`` of ``client``'s training set, as :meth:`run` samples them."""
        return self._train[self._check_client(client)]

    def initial_state(self) -> dict[str, Tensor]:
        """The LoRA state right after initialisation (B = 0: the model equals the base)."""
        return {k: v.clone() for k, v in self._initial.items()}

    def estimate_cost(self) -> tuple[float, int]:
        """``(flops, tokens)`` of one :meth:`run` (see the class docstring)."""
        return self._cost

    # ---------------------------------------------------------------------------------- work
    def _check_client(self, client: int) -> int:
        if not 0 <= client < len(self.clients):
            raise ValueError(f"client {client} out of range 0..{len(self.clients) - 1}")
        return client

    def _load(self, state: Mapping[str, Tensor]) -> None:
        ks = set(state)
        if ks != self._keys:
            raise ValueError(f"start_state keys differ from the model's trainable state: "
                             f"missing {sorted(self._keys - ks)}, extra {sorted(ks - self._keys)}")
        with torch.no_grad():
            for k, p in self._params.items():
                v = state[k]
                if v.shape != p.shape:
                    raise ValueError(f"start_state[{k!r}] has shape {tuple(v.shape)}, expected {tuple(p.shape)}")
                p.copy_(v)

    def _extract(self) -> dict[str, Tensor]:
        return {k: p.detach().clone() for k, p in self._params.items()}

    @torch.no_grad()
    def _eval_loss(self, client: int) -> float:
        ids, labels = self._eval[client]
        if ids.shape[0] == 0:
            return float("nan")
        self.model.eval()
        bs = self.train_spec.batch_size
        total, count = 0.0, 0
        for i in range(0, ids.shape[0], bs):
            x, y = ids[i:i + bs], labels[i:i + bs]
            logits = self.model(input_ids=x).logits[:, :-1]
            tgt = y[:, 1:]
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               tgt.reshape(-1), ignore_index=-100,
                                               reduction="sum")
            total += float(loss)
            count += int((tgt != -100).sum())
        return total / count if count else float("nan")

    def evaluate(self, state: Mapping[str, Tensor], client: int) -> float:
        """Eval loss of ``state`` on ``client``'s held-out set (same rows as in :meth:`run`)."""
        self._load(state)
        return self._eval_loss(self._check_client(client))

    def run(self, job: TrainJob) -> TrainResult:
        from peft import get_peft_model_state_dict

        c = self._check_client(job.client)
        ts = self.train_spec
        torch.manual_seed(job.seed)
        gen = torch.Generator().manual_seed(job.seed)
        self._load(job.start_state)
        ids, labels = self._train[c]
        n = ids.shape[0]
        need = ts.local_steps * ts.batch_size
        order = (torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])
                 if need else torch.empty(0, dtype=torch.long))

        losses = []
        if ts.local_steps:
            opt = torch.optim.AdamW(self._trainable, lr=ts.learning_rate, weight_decay=0.0)
            self.model.train()
            for s in range(ts.local_steps):
                idx = order[s * ts.batch_size:(s + 1) * ts.batch_size]
                loss = self.model(input_ids=ids[idx], labels=labels[idx]).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            opt.zero_grad(set_to_none=True)
        train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
        eval_loss = self._eval_loss(c)
        state = self._extract()
        flops, tokens = self._cost
        return TrainResult(client=job.client, round=job.round, state=state,
                           num_samples=n, train_loss=train_loss, eval_loss=eval_loss,
                           flops=flops, tokens=tokens)
