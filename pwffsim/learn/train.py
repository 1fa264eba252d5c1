"""One client's local update and its analytic cost.

A local update = supervised fine-tuning of the trainable state (LoRA + bottleneck adapters) on the
client's instruction data, then (``TrainSpec.align_steps > 0``) local multi-objective alignment with
RLOO on the client's personalized reward ``w_help * r_help + w_safe * r_safe``, then held-out metrics.

The learning side knows nothing about simulated time and never imports simpy: the simulator turns
the FLOPs reported here into compute time and energy with a device profile.

Reproducibility: :meth:`Learner.run` depends only on the specs and the job. It seeds torch with
``job.seed``, samples batches from a ``torch.Generator`` seeded with ``job.seed``, loads
``job.start_state`` into the (reused) peft model by direct parameter copies and builds a new
AdamW optimizer per job (one for the supervised steps, one for the alignment steps), so neither earlier
calls nor the process running it matter. Alignment sampling uses ``torch.multinomial`` with the same
``torch.Generator``. Bit-identical
results across processes additionally need the same torch build and thread count (``torch_threads``,
default 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from .data import (
    ClientData, DataSpec, Sample, build_client_datasets, encode_samples, encoded_length,
)
from .model import ModelSpec, build_peft_model

#: Parameter groups of the trainable state (see :meth:`Learner.parameter_group`).
GROUPS = ("lora", "adapter")


@dataclass(frozen=True)
class TrainSpec:
    local_steps: int = 5
    batch_size: int = 8
    seq_len: int = 32
    learning_rate: float = 3e-3
    eval_batches: int = 1  # 0 = no eval (eval_loss, eval_loss_others nan)
    prox_mu: float = 0.0   # proximal weight mu (term mu/2 ||theta - anchor||^2 on job.prox_anchor)
    align_steps: int = 0   # RLOO alignment steps after the supervised ones; 0 = no alignment
    align_prompts: int = 8         # prompts per alignment step (from the client's training data)
    align_samples: int = 4         # K sampled responses per prompt (RLOO needs K >= 2)
    # Fixed generation length (no early stop: fixed FLOPs). 14 fits every built-in answer + eos
    # (the longest borderline answers have 12 words); metrics decode greedily to the same length.
    align_max_new_tokens: int = 14
    align_learning_rate: float = 2e-3
    metric_prompts: int = 8        # held-out prompts for reward metrics (greedy); 0 = none (nan)
    help_reward: str = "help-rule"  # reward models (pwffsim.learn.rewards.build_reward_model)
    safe_reward: str = "safe-rule"

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
        if not (self.prox_mu >= 0 and math.isfinite(self.prox_mu)):
            raise ValueError(f"prox_mu must be finite and >= 0, got {self.prox_mu}")
        for name in ("align_steps", "metric_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.align_prompts < 1:
            raise ValueError(f"align_prompts must be >= 1, got {self.align_prompts}")
        if self.align_samples < 2:
            raise ValueError(f"align_samples must be >= 2 (leave-one-out baseline), "
                             f"got {self.align_samples}")
        if self.align_max_new_tokens < 1:
            raise ValueError(f"align_max_new_tokens must be >= 1, got {self.align_max_new_tokens}")
        if not (self.align_learning_rate > 0 and math.isfinite(self.align_learning_rate)):
            raise ValueError(f"align_learning_rate must be > 0, got {self.align_learning_rate}")


@dataclass
class TrainJob:
    client: int
    round: int
    seed: int
    start_state: dict[str, Tensor]  # full trainable state (LoRA keys as peft names them + adapters)
    pref_help: float = 0.5          # the client's weights of the personalized reward
    pref_safe: float = 0.5
    # The global part the client started from: proximal term mu/2 * sum_k ||theta_k - anchor_k||^2
    # over the anchor's keys (TrainSpec.prox_mu) is added to every loss of the update.
    prox_anchor: dict[str, Tensor] | None = None


@dataclass
class TrainResult:
    client: int
    round: int
    state: dict[str, Tensor]  # trained trainable state (cpu clones), same keys
    num_samples: int          # client's train set size (aggregation weight)
    train_loss: float         # mean loss over the local steps (nan if local_steps == 0)
    eval_loss: float          # on the client's held-out eval set after training (nan if no eval)
    flops: float              # cost of this update (training, alignment, eval and metrics)
    tokens: int
    reward_help: float = float("nan")   # mean helpfulness on metric_prompts held-out prompts (greedy)
    reward_safe: float = float("nan")   # mean harmlessness, same prompts and responses
    objective: float = float("nan")     # personalized_reward(reward_help, reward_safe, prefs)
    eval_loss_others: float = float("nan")  # loss on the other clients' pooled held-out rows
    align_reward: float = float("nan")  # mean personalized reward of the sampled responses


def _matmul_weight_params(model: nn.Module) -> int:
    """Parameters of every matmul weight: nn.Linear (incl. LoRA A/B and lm_head) and transformers'
    Conv1D; embedding lookups excluded. A tied lm_head counts (it is a matmul)."""
    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))


def _positions(mask: Tensor) -> Tensor:
    """Position ids for left-padded rows: 0 at the first real token (padding gets 0 too)."""
    return (mask.cumsum(1) - 1).clamp(min=0)


class Learner:
    """Runs clients' local updates on one reused peft model (LoRA + bottleneck adapters).

    **Trainable state**: one dict, LoRA keys as peft names them
    (``...c_attn.lora_A.weight``), adapter keys their parameter names (``...mlp.adapter.down.weight``).
    :meth:`parameter_group` tells ``"lora"`` from ``"adapter"``; the caller decides which group is
    global (aggregated) or personal; the learner takes and returns the full state.

    **A local update** (:meth:`run`): ``local_steps`` supervised AdamW steps (loss on the response
    tokens), then ``align_steps`` RLOO steps (below), both plus the proximal term
    ``prox_mu/2 * sum_k ||theta_k - anchor_k||^2`` over ``job.prox_anchor``'s keys; then the held-out
    metrics: ``eval_loss`` (own eval rows), ``eval_loss_others`` (a fixed pool of the other clients'
    eval rows, as many rows as the own eval, round-robin over the other clients; the
    personalization gap is ``eval_loss_others - eval_loss``), and ``reward_help``/``reward_safe``: the
    mean rule rewards of greedy responses to the client's first ``metric_prompts`` eval prompts
    (cycled), ``objective = w_help * reward_help + w_safe * reward_safe``.

    **RLOO alignment** (REINFORCE with a leave-one-out baseline, Ahmadian et al. 2024): per step,
    draw ``align_prompts`` prompts of the client's training set (``torch.randint`` on the job's
    generator), sample ``K = align_samples`` responses each (temperature 1, ``torch.multinomial`` on
    the job's generator, always ``align_max_new_tokens`` tokens with a KV cache: no early stop, so
    the FLOPs are fixed; a response is cut at its first eos for scoring), score
    ``r = w_help * r_help + w_safe * r_safe``, advantage ``A_i = r_i - mean_{j != i} r_j`` within the
    prompt's K responses, loss ``-mean_i(A_i * sum_t log p(y_it))`` over the response tokens up to
    and including the first eos, one AdamW step at ``align_learning_rate`` (eval mode: no dropout).
    Prompts are left-padded to a fixed length ``P`` (the longest prompt of all clients' data) with an
    attention mask and position ids, so every generation has the same shape.

    **FLOPs model** (analytic; :meth:`estimate_cost` equals what :meth:`run` reports)::

        P_mm     = parameters of every matmul weight (Linear/Conv1D incl. LoRA A/B, the adapters'
                   down/up projections and lm_head; not embedding lookups)
        fwd(L)   = 2 * P_mm + 2 * n_layer * L * d_model     per token attending L positions
                   (Kaplan et al. 2020: 2 FLOPs per weight per token + attention scores and sum)
        bwd(L)   = fwd(L) + 2 * P_trainable                  per token (activation gradients cost a
                   forward; weight gradients only for the trainable weights)
        S = seq_len, T = align_max_new_tokens, P = fixed (left-padded) prompt length
        gen(N)   = N * (P * fwd(P) + sum_{i=1}^{T-1} fwd(P + i))   N sequences, KV cache: a prefill
                   of P tokens then T-1 single-token steps (the T-th token needs no forward)
        pg(N)    = N * (P + T - 1) * (fwd(P + T - 1) + bwd(P + T - 1))   policy-gradient pass
        flops    = local_steps * batch_size * S * (fwd(S) + bwd(S))               supervised
                 + align_steps * (gen(A) + pg(A)),  A = align_prompts * align_samples    alignment
                 + E * S * fwd(S) * (1 + [num_clients > 1])   E = eval_batches * batch_size rows,
                                                              own eval + eval on the others' pool
                 + gen(metric_prompts)                                            greedy metrics
        tokens   = the token positions of every forward above (padding included: it is computed)

    Not counted (negligible or outside the model): the proximal term (O(parameters) per step), the
    optimizer update, sampling, and the reward models (the rule rewards are string comparisons; a
    classifier reward model's FLOPs are not included).
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
        tok = self.tokenizer
        longest = max(encoded_length(s, tok) for c in self.clients for s in (*c.train, *c.eval))
        if longest > ts.seq_len:
            raise ValueError(f"seq_len {ts.seq_len} is too short: the longest sample needs "
                             f"{longest} tokens (prompt + response + eos)")
        self._eos = int(tok.eos_token_id)
        self._pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.prompt_len = max(len(tok(s.prompt, add_special_tokens=False)["input_ids"])
                              for c in self.clients for s in (*c.train, *c.eval))
        need_gen = ts.metric_prompts > 0 or ts.align_steps > 0
        if need_gen and n_pos is not None and self.prompt_len + ts.align_max_new_tokens > n_pos:
            raise ValueError(f"prompt length {self.prompt_len} + align_max_new_tokens "
                             f"{ts.align_max_new_tokens} exceeds the model's {n_pos} positions")

        # Tokenise once: per client, train tensors, the (cycled) eval rows, the pooled eval rows of
        # the other clients, and left-padded prompts (train for alignment, eval for metrics).
        n_eval_rows = ts.eval_batches * ts.batch_size
        n_cl = len(self.clients)
        self._train: list[tuple[Tensor, Tensor]] = []
        self._eval: list[tuple[Tensor, Tensor]] = []
        self._eval_others: list[tuple[Tensor, Tensor] | None] = []
        self._train_prompts: list[tuple[Tensor, Tensor]] = []
        self._metric_samples: list[list[Sample]] = []
        self._metric_prompts: list[tuple[Tensor, Tensor]] = []
        for c in self.clients:
            self._train.append(encode_samples(c.train, tok, ts.seq_len))
            ev = [c.eval[i % len(c.eval)] for i in range(n_eval_rows)]
            self._eval.append(encode_samples(ev, tok, ts.seq_len))
            others = [o for o in self.clients if o.client != c.client]
            if others and n_eval_rows:
                pool = []
                for i in range(n_eval_rows):
                    o = others[i % len(others)]
                    pool.append(o.eval[(i // len(others)) % len(o.eval)])
                self._eval_others.append(encode_samples(pool, tok, ts.seq_len))
            else:
                self._eval_others.append(None)
            self._train_prompts.append(self._encode_prompts(c.train))
            ms = [c.eval[i % len(c.eval)] for i in range(ts.metric_prompts)]
            self._metric_samples.append(ms)
            self._metric_prompts.append(self._encode_prompts(ms))

        # KV-cache keyword: transformers >= 5.2x names it ``cache`` (``past_key_values`` deprecated).
        import inspect

        fwd_params = inspect.signature(self.model.get_base_model().forward).parameters
        self._cache_kw = "cache" if "cache" in fwd_params else "past_key_values"

        self._help = self._safe = None
        if need_gen:
            from .rewards import build_reward_model

            self._help = build_reward_model(ts.help_reward)
            self._safe = build_reward_model(ts.safe_reward)

        # Trainable state: LoRA (peft's state-dict keys) + adapters (their parameter names).
        lora_keys = set(get_peft_model_state_dict(self.model))
        adapter = getattr(self.model, "active_adapter", "default")
        self._params: dict[str, torch.nn.Parameter] = {}
        self._group: dict[str, str] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            key = name.replace(f".{adapter}.", ".")
            if key in lora_keys:
                self._group[key] = "lora"
            elif ".adapter." in name:
                key = name
                self._group[key] = "adapter"
            else:
                raise ValueError(f"trainable parameter {name!r} is neither LoRA nor an adapter")
            self._params[key] = p
        if not lora_keys <= set(self._params):
            raise ValueError(f"trainable parameters do not match peft's state dict: "
                             f"{sorted(lora_keys - set(self._params))[:4]}")
        self._trainable = list(self._params.values())
        self._initial = self._extract()
        self._keys = frozenset(self._initial)

        # Cost model.
        n_layer = int(cfg.num_hidden_layers)
        d_model = int(cfg.hidden_size)
        p_mm = _matmul_weight_params(self.model)
        p_tr = sum(p.numel() for p in self._trainable)

        def fwd(L: int) -> float:
            return 2.0 * p_mm + 2.0 * n_layer * L * d_model

        def bwd(L: int) -> float:
            return fwd(L) + 2.0 * p_tr

        P, T, S = self.prompt_len, ts.align_max_new_tokens, ts.seq_len

        def gen(n: int) -> tuple[float, int]:
            return (n * (P * fwd(P) + sum(fwd(P + i) for i in range(1, T))), n * (P + T - 1))

        A = ts.align_prompts * ts.align_samples
        t_train = ts.local_steps * ts.batch_size * S
        t_eval = n_eval_rows * S * (2 if n_cl > 1 else 1)
        g_align, t_galign = gen(A)
        t_pg_step = A * (P + T - 1)
        f_pg_step = t_pg_step * (fwd(P + T - 1) + bwd(P + T - 1))
        f_metric, t_metric = gen(ts.metric_prompts)
        parts = dict(
            train=(t_train * (fwd(S) + bwd(S)), t_train),
            align_generate=(ts.align_steps * g_align, ts.align_steps * t_galign),
            align_policy_gradient=(ts.align_steps * f_pg_step, ts.align_steps * t_pg_step),
            eval=(t_eval * fwd(S), t_eval),
            metrics=(f_metric, t_metric),
        )
        self.cost_breakdown = dict(
            matmul_weight_params=p_mm, trainable_params=p_tr, n_layer=n_layer, d_model=d_model,
            forward_flops_per_token=fwd(S), backward_flops_per_token=bwd(S),
            prompt_len=P, train_tokens=t_train, eval_tokens=t_eval,
            flops_by_part={k: float(v[0]) for k, v in parts.items()},
            tokens_by_part={k: int(v[1]) for k, v in parts.items()})
        self._cost = (float(sum(v[0] for v in parts.values())),
                      int(sum(v[1] for v in parts.values())))

    def _encode_prompts(self, samples) -> tuple[Tensor, Tensor]:
        """Left-padded prompt ids ``[n, P]`` and their attention mask."""
        P = self.prompt_len
        ids = torch.full((len(samples), P), self._pad, dtype=torch.long)
        mask = torch.zeros((len(samples), P), dtype=torch.long)
        for i, s in enumerate(samples):
            p = list(self.tokenizer(s.prompt, add_special_tokens=False)["input_ids"])
            ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, P - len(p):] = 1
        return ids, mask

    # ---------------------------------------------------------------------------------- info
    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.model.parameters())
        return {"total": int(total), "trainable": int(sum(p.numel() for p in self._trainable)),
                **{g: int(sum(self._params[k].numel() for k in self.group_keys(g)))
                   for g in GROUPS}}

    def parameter_group(self, key: str) -> str:
        """``"lora"`` or ``"adapter"`` for a key of the trainable state (``KeyError`` otherwise)."""
        try:
            return self._group[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a key of the trainable state") from None

    def group_keys(self, group: str) -> list[str]:
        """The trainable-state keys of ``group`` (``"lora"`` or ``"adapter"``), in model order."""
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; expected one of {GROUPS}")
        return [k for k, g in self._group.items() if g == group]

    def num_samples(self, client: int) -> int:
        return len(self.clients[self._check_client(client)].train)

    def client_tensors(self, client: int) -> tuple[Tensor, Tensor]:
        """``(input_ids, labels)`` of ``client``'s training set, as :meth:`run` samples them."""
        return self._train[self._check_client(client)]

    def initial_state(self) -> dict[str, Tensor]:
        """The trainable state right after initialisation (LoRA B = 0 and adapter up-projections = 0:
        the model equals the base)."""
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

    def _anchor(self, anchor: Mapping[str, Tensor] | None) -> list[tuple[Tensor, Tensor]]:
        """``[(param, anchor tensor)]`` for the proximal term (empty if mu = 0 or no anchor)."""
        if anchor is None or not self.train_spec.prox_mu:
            return []
        extra = sorted(set(anchor) - self._keys)
        if extra:
            raise ValueError(f"prox_anchor has keys that are not trainable: {extra[:4]}")
        out = []
        for k, v in anchor.items():
            p = self._params[k]
            if v.shape != p.shape:
                raise ValueError(f"prox_anchor[{k!r}] has shape {tuple(v.shape)}, "
                                 f"expected {tuple(p.shape)}")
            out.append((p, v.detach().to(p.device, p.dtype)))
        return out

    def _prox(self, pairs: list[tuple[Tensor, Tensor]]) -> Tensor | float:
        if not pairs:
            return 0.0
        return 0.5 * self.train_spec.prox_mu * sum(((p - a) ** 2).sum() for p, a in pairs)

    @torch.no_grad()
    def _loss_on(self, rows: tuple[Tensor, Tensor] | None) -> float:
        if rows is None or rows[0].shape[0] == 0:
            return float("nan")
        ids, labels = rows
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

    def _eval_loss(self, client: int) -> float:
        return self._loss_on(self._eval[client])

    @torch.no_grad()
    def _generate(self, ids: Tensor, mask: Tensor, gen: torch.Generator | None) -> Tensor:
        """``[n, T]`` new tokens after left-padded prompts: sampled at temperature 1 from ``gen``
        (``torch.multinomial``) or greedy if ``gen`` is None. Always ``T`` tokens (no early stop);
        a KV cache: one prefill of ``P`` tokens, then ``T - 1`` single-token forwards."""
        T = self.train_spec.align_max_new_tokens
        self.model.eval()
        pos = _positions(mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        new = []
        for i in range(T):
            logits = out.logits[:, -1].float()
            if gen is None:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
            new.append(nxt)
            if i == T - 1:
                break
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            pos = pos[:, -1:] + 1
            kv = getattr(out, "cache", None)
            if kv is None:
                kv = out.past_key_values
            out = self.model(input_ids=nxt, attention_mask=mask, position_ids=pos,
                             use_cache=True, **{self._cache_kw: kv})
        return torch.cat(new, 1)

    def _until_eos(self, new: Tensor) -> Tensor:
        """Mask of the response tokens up to and including the first eos."""
        is_eos = (new == self._eos).long()
        return (is_eos.cumsum(1) - is_eos) == 0

    def _decode(self, new: Tensor) -> list[str]:
        keep = self._until_eos(new)
        out = []
        for row, k in zip(new.tolist(), keep.tolist()):
            toks = [t for t, m in zip(row, k) if m and t != self._eos]
            out.append(self.tokenizer.decode(toks, skip_special_tokens=True).strip())
        return out

    def _rewards(self, samples, responses) -> tuple[list[float], list[float]]:
        return (list(self._help.score(samples, responses)),
                list(self._safe.score(samples, responses)))

    def _metrics(self, client: int, pref_help: float, pref_safe: float) -> dict:
        from .rewards import personalized_reward

        nan = float("nan")
        out = dict(eval_loss=self._eval_loss(client),
                   eval_loss_others=self._loss_on(self._eval_others[client]),
                   reward_help=nan, reward_safe=nan, objective=nan)
        samples = self._metric_samples[client]
        if samples:
            ids, mask = self._metric_prompts[client]
            responses = self._decode(self._generate(ids, mask, None))
            rh, rs = self._rewards(samples, responses)
            out["reward_help"] = sum(rh) / len(rh)
            out["reward_safe"] = sum(rs) / len(rs)
            out["objective"] = personalized_reward(out["reward_help"], out["reward_safe"],
                                                   pref_help, pref_safe)
        return out

    def evaluate(self, state: Mapping[str, Tensor], client: int) -> float:
        """Eval loss of ``state`` on ``client``'s held-out set (same rows as in :meth:`run`)."""
        self._load(state)
        return self._eval_loss(self._check_client(client))

    def evaluate_metrics(self, state: Mapping[str, Tensor], client: int,
                         pref_help: float = 0.5, pref_safe: float = 0.5) -> dict:
        """The held-out metrics of :meth:`run` for ``state`` without training: ``eval_loss``,
        ``eval_loss_others``, ``reward_help``, ``reward_safe``, ``objective`` (and ``gap`` =
        ``eval_loss_others - eval_loss``). Costs no FLOPs in the traces (it is not a local update)."""
        c = self._check_client(client)
        self._load(state)
        m = self._metrics(c, pref_help, pref_safe)
        m["gap"] = m["eval_loss_others"] - m["eval_loss"]
        return m

    def _align_step(self, c: int, gen: torch.Generator, opt, prox, pref_help, pref_safe) -> float:
        from .rewards import personalized_reward

        ts = self.train_spec
        K, T, P = ts.align_samples, ts.align_max_new_tokens, self.prompt_len
        p_ids, p_mask = self._train_prompts[c]
        pick = torch.randint(p_ids.shape[0], (ts.align_prompts,), generator=gen)
        ids = p_ids[pick].repeat_interleave(K, 0)
        mask = p_mask[pick].repeat_interleave(K, 0)
        new = self._generate(ids, mask, gen)
        samples = [self.clients[c].train[int(i)] for i in pick for _ in range(K)]
        rh, rs = self._rewards(samples, self._decode(new))
        r = torch.tensor([personalized_reward(h, s, pref_help, pref_safe) for h, s in zip(rh, rs)],
                         dtype=torch.float32).view(ts.align_prompts, K)
        adv = (r - (r.sum(1, keepdim=True) - r) / (K - 1)).reshape(-1)
        # Policy gradient on [prompt, response[:-1]] (the last token is never an input).
        x = torch.cat([ids, new], 1)[:, :-1]
        xm = torch.cat([mask, torch.ones_like(new)], 1)[:, :-1]
        self.model.eval()  # no dropout: log-probs of the policy that sampled
        logits = self.model(input_ids=x, attention_mask=xm, position_ids=_positions(xm)).logits
        logp = torch.log_softmax(logits[:, P - 1:].float(), -1).gather(-1, new[..., None])[..., 0]
        seq_logp = (logp * self._until_eos(new)).sum(1)
        loss = -(adv * seq_logp).mean() + self._prox(prox)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(r.mean())

    def run(self, job: TrainJob) -> TrainResult:
        c = self._check_client(job.client)
        ts = self.train_spec
        for name in ("pref_help", "pref_safe"):
            v = getattr(job, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        torch.manual_seed(job.seed)
        gen = torch.Generator().manual_seed(job.seed)
        self._load(job.start_state)
        prox = self._anchor(job.prox_anchor)
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
                losses.append(loss.detach())
                if prox:
                    loss = loss + self._prox(prox)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
        train_loss = float(torch.stack(losses).mean()) if losses else float("nan")

        align_r = []
        if ts.align_steps:
            opt = torch.optim.AdamW(self._trainable, lr=ts.align_learning_rate, weight_decay=0.0)
            for _ in range(ts.align_steps):
                align_r.append(self._align_step(c, gen, opt, prox, job.pref_help, job.pref_safe))
            opt.zero_grad(set_to_none=True)
        self.model.eval()

        m = self._metrics(c, job.pref_help, job.pref_safe)
        state = self._extract()
        flops, tokens = self._cost
        return TrainResult(client=job.client, round=job.round, state=state,
                           num_samples=n, train_loss=train_loss, eval_loss=m["eval_loss"],
                           flops=flops, tokens=tokens, reward_help=m["reward_help"],
                           reward_safe=m["reward_safe"], objective=m["objective"],
                           eval_loss_others=m["eval_loss_others"],
                           align_reward=sum(align_r) / len(align_r) if align_r else float("nan"))
