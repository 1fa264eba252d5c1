"""Generation and RLOO alignment on the client's personalized reward.

**Generation** (:class:`ResponseSampler`): after left-padded prompts (attention mask and position
ids), always ``align_max_new_tokens`` new tokens with a KV cache, no early stop, so the FLOPs are
fixed; temperature-1 sampling (``torch.multinomial`` on the job's generator) or greedy. A response is
cut at its first eos for scoring and decoding.

**RLOO alignment** (:class:`RLOOAligner`; REINFORCE with a leave-one-out baseline, Ahmadian et al.
2024): per step, draw ``align_prompts`` prompts of the client's training set (``torch.randint`` on
the job's generator), sample ``K = align_samples`` responses each, score
``r = w_help * r_help + w_safe * r_safe``, advantage ``A_i = R_i - mean_{j != i} R_j`` within the
prompt's K responses (``r`` is :func:`~pwffsim.learn.rewards.prompt_reward`: ``r_help`` alone on a
benign prompt), loss ``-mean_i(A_i * sum_t log p(y_it))`` over the response tokens up to and
including the first eos; one step of ``TrainSpec.optimizer`` at ``align_learning_rate`` (eval mode:
no dropout, so the log-probs are those of the policy that sampled), then the proximal step
(``prox_form = "decoupled"``) or with the proximal term in the loss (``"gradient"``).

**KL to a reference** (``align_kl_coef = beta > 0``): ``R_i = r_i - beta * KL_i`` with the
per-sequence estimate ``KL_i = sum_t (log pi(y_it) - log pi_ref(y_it))`` over the same response
tokens (detached: the KL enters through the advantage, as in the RLOO paper), ``pi_ref`` the
trainable state at the start of the alignment phase (after the supervised steps: the local SFT
policy), frozen; one more forward per step, charged (``align_reference`` in
:mod:`pwffsim.learn.cost`). With ``beta = 0``, ``R_i = r_i`` and no reference is kept or run.

**Skipped steps**: a step whose advantages are all zero (every prompt's K shaped rewards equal: no
signal) makes no optimizer step and no proximal step (counted in ``TrainResult.align_steps_skipped``);
within a step, a prompt whose K shaped rewards are equal gets advantages of exactly 0. With
``beta = 0`` a skipped step runs no policy forward either; it is still charged its policy-gradient
FLOPs (the cost of an update is fixed before it runs). ``align_reward`` averages the unshaped ``r``
over every step, skipped or not.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn

from .batches import Prompts
from .data import Sample
from .model import forward_parameters
from .optim import make_optimizer
from .state import ProximalTerm

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainSpec


def positions(mask: Tensor) -> Tensor:
    """Position ids for left-padded rows: 0 at the first real token (padding gets 0 too)."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def cache_keyword(model: nn.Module) -> str:
    """The KV-cache keyword of the base model's forward: transformers >= 5.2x names it ``cache``
    (``past_key_values`` deprecated)."""
    return "cache" if "cache" in forward_parameters(model.get_base_model()) else "past_key_values"


def leave_one_out_advantages(r: Tensor) -> Tensor:
    """``A_i = r_i - mean_{j != i} r_j`` within each row of ``r`` ``[prompts, K]``, flattened."""
    K = r.shape[1]
    return (r - (r.sum(1, keepdim=True) - r) / (K - 1)).reshape(-1)


def equal_groups(r: Tensor) -> Tensor:
    """``[prompts]`` bool: whether all K rewards of a row of ``r`` ``[prompts, K]`` are equal (its
    leave-one-out advantages are then 0 in exact arithmetic)."""
    return (r == r[:, :1]).all(1)


def sequence_kl(logp: Tensor, logp_ref: Tensor, keep: Tensor) -> Tensor:
    """Per-sequence KL estimate ``sum_t keep_t * (logp_t - logp_ref_t)`` ``[n]``: the log-ratio of
    the sampled tokens under the policy and the reference, over the kept (response) tokens."""
    return ((logp - logp_ref) * keep).sum(1)


class ResponseSampler:
    """Fixed-length generation after left-padded prompts, and decoding up to the first eos."""

    def __init__(self, model: nn.Module, tokenizer, eos: int, max_new_tokens: int):
        self.model, self.tokenizer = model, tokenizer
        self.eos, self.max_new_tokens = eos, max_new_tokens
        self.cache_kw = cache_keyword(model)

    @torch.no_grad()
    def generate(self, ids: Tensor, mask: Tensor, gen) -> Tensor:
        """``[n, T]`` new tokens after left-padded prompts: sampled at temperature 1 from ``gen``
        (``torch.multinomial``; a sequence of generators: one per equal consecutive part of the rows,
        :meth:`_next`) or greedy if ``gen`` is None. Always ``T`` tokens (no early stop); a KV
        cache: one prefill of ``P`` tokens, then ``T - 1`` single-token forwards."""
        T = self.max_new_tokens
        self.model.eval()
        pos = positions(mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        new = []
        for i in range(T):
            nxt = self._next(out.logits[:, -1].float(), gen)
            new.append(nxt)
            if i == T - 1:
                break
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            pos = pos[:, -1:] + 1
            kv = getattr(out, "cache", None)
            if kv is None:
                kv = out.past_key_values
            out = self.model(input_ids=nxt, attention_mask=mask, position_ids=pos,
                             use_cache=True, **{self.cache_kw: kv})
        return torch.cat(new, 1)

    @staticmethod
    def _next(logits: Tensor, gen) -> Tensor:
        """``[n, 1]`` next tokens: greedy (``gen`` None), sampled from ``gen``, or (a sequence of
        generators) the rows split in as many equal consecutive parts, each sampled from its own."""
        if gen is None:
            return logits.argmax(-1, keepdim=True)
        probs = torch.softmax(logits, -1)
        if isinstance(gen, torch.Generator):
            return torch.multinomial(probs, 1, generator=gen)
        return torch.cat([torch.multinomial(part, 1, generator=g)
                          for part, g in zip(probs.split(probs.shape[0] // len(gen)), gen)])

    def until_eos(self, new: Tensor) -> Tensor:
        """Mask of the response tokens up to and including the first eos."""
        is_eos = (new == self.eos).long()
        return (is_eos.cumsum(1) - is_eos) == 0

    def decode(self, new: Tensor) -> list[str]:
        """The responses as text, each cut before its first eos."""
        keep = self.until_eos(new)
        out = []
        for row, k in zip(new.tolist(), keep.tolist()):
            toks = [t for t, m in zip(row, k) if m and t != self.eos]
            # a sampled special token (pad, unk, bos) stays in the text: it spoils an exact match
            out.append(self.tokenizer.decode(toks, skip_special_tokens=False).strip())
        return out


class PreferenceRewards:
    """The two reward models of the personalized reward, by name
    (:func:`pwffsim.learn.rewards.build_reward_model`)."""

    def __init__(self, help_reward: str, safe_reward: str):
        from .rewards import build_reward_model

        self.help = build_reward_model(help_reward)
        self.safe = build_reward_model(safe_reward)

    def score(self, samples, responses) -> tuple[list[float], list[float]]:
        """``(r_help, r_safe)`` of each response to its sample's prompt, each in [0, 1]."""
        return (list(self.help.score(samples, responses)),
                list(self.safe.score(samples, responses)))


class RLOOAligner:
    """The alignment phase of a local update (see the module docstring)."""

    def __init__(self, model: nn.Module, sampler: ResponseSampler, rewards: PreferenceRewards | None,
                 spec: TrainSpec, prompt_len: int):
        self.model, self.sampler, self.rewards = model, sampler, rewards
        self.spec, self.prompt_len = spec, prompt_len

    def run(self, prompts: Prompts, samples: Sequence[Sample], gen: torch.Generator,
            params: list[nn.Parameter], prox: ProximalTerm, pref_help: float,
            pref_safe: float) -> tuple[float, int]:
        """``align_steps`` RLOO steps with a fresh ``optimizer`` on ``params``, prompts drawn from
        ``prompts`` (``samples`` behind them); ``(mean personalized reward of the sampled responses
        (nan if align_steps == 0), steps skipped)``."""
        ts = self.spec
        align_r, skipped = [], 0
        if ts.align_steps:
            opt = make_optimizer(ts.optimizer, params, ts.align_learning_rate)
            ref = [p.detach().clone() for p in params] if ts.align_kl_coef > 0 else None
            for _ in range(ts.align_steps):
                r, skip = self.step(prompts, samples, gen, opt, prox, pref_help, pref_safe,
                                    params, ref)
                align_r.append(r)
                skipped += skip
            opt.zero_grad(set_to_none=True)
        return (sum(align_r) / len(align_r) if align_r else float("nan")), skipped

    def draw_prompts(self, prompts: Prompts, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids, mask, pick)``: ``align_prompts`` prompts drawn from ``prompts`` (``torch.randint``
        on ``gen``), each repeated K times."""
        ts = self.spec
        p_ids, p_mask = prompts
        pick = torch.randint(p_ids.shape[0], (ts.align_prompts,), generator=gen)
        return (p_ids[pick].repeat_interleave(ts.align_samples, 0),
                p_mask[pick].repeat_interleave(ts.align_samples, 0), pick)

    def score(self, samples: Sequence[Sample], pick: Tensor, new: Tensor, pref_help: float,
              pref_safe: float) -> Tensor:
        """The personalized rewards ``[align_prompts, K]`` of the responses ``new`` to the drawn
        prompts ``pick`` (``samples`` behind them)."""
        from .rewards import prompt_reward

        K = self.spec.align_samples
        picked = [samples[int(i)] for i in pick for _ in range(K)]
        rh, rs = self.rewards.score(picked, self.sampler.decode(new))
        return torch.tensor([prompt_reward(p, h, s, pref_help, pref_safe) for p, h, s in zip(picked, rh, rs)],
                            dtype=torch.float32).view(self.spec.align_prompts, K)

    def _sample_and_score(self, prompts: Prompts, samples: Sequence[Sample],
                          gen: torch.Generator, pref_help: float,
                          pref_safe: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(ids, mask, new, r)``: the drawn prompts (each repeated K times), the sampled
        responses and their personalized rewards ``[align_prompts, K]``."""
        ids, mask, pick = self.draw_prompts(prompts, gen)
        new = self.sampler.generate(ids, mask, gen)
        return ids, mask, new, self.score(samples, pick, new, pref_help, pref_safe)

    @staticmethod
    def policy_inputs(ids: Tensor, mask: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, xm)``: the policy gradient's input ``[prompt, response[:-1]]`` (the last token is
        never an input) and its attention mask."""
        return torch.cat([ids, new], 1)[:, :-1], torch.cat([mask, torch.ones_like(new)], 1)[:, :-1]

    def _response_logp(self, x: Tensor, xm: Tensor, new: Tensor) -> Tensor:
        """``[n, T]`` log-probs of the sampled tokens ``new`` under the current parameters, from one
        forward of ``x`` (prompt + response[:-1]) with attention mask ``xm``."""
        self.model.eval()  # no dropout: log-probs of the policy that sampled
        logits = self.model(input_ids=x, attention_mask=xm, position_ids=positions(xm)).logits
        P = self.prompt_len
        return torch.log_softmax(logits[:, P - 1:].float(), -1).gather(-1, new[..., None])[..., 0]

    @torch.no_grad()
    def _reference_logp(self, x: Tensor, xm: Tensor, new: Tensor, params: list[nn.Parameter],
                        ref: list[Tensor]) -> Tensor:
        """:meth:`_response_logp` under the reference values ``ref`` of ``params`` (copied in, then
        the current values copied back: the model is left as it was)."""
        current = [p.detach().clone() for p in params]
        for p, v in zip(params, ref):
            p.copy_(v)
        try:
            return self._response_logp(x, xm, new)
        finally:
            for p, v in zip(params, current):
                p.copy_(v)

    def step(self, prompts: Prompts, samples: Sequence[Sample], gen: torch.Generator,
             opt: torch.optim.Optimizer, prox: ProximalTerm, pref_help: float,
             pref_safe: float, params: list[nn.Parameter] | None = None,
             ref: list[Tensor] | None = None) -> tuple[float, bool]:
        """One RLOO step (reference values ``ref`` of ``params`` for the KL term, None: no KL);
        ``(mean personalized reward of its sampled responses, whether the step was skipped)``."""
        ids, mask, new, r = self._sample_and_score(prompts, samples, gen, pref_help, pref_safe)
        if ref is None and bool(equal_groups(r).all()):
            return float(r.mean()), True
        x, xm = self.policy_inputs(ids, mask, new)
        keep = self.sampler.until_eos(new)
        logp_ref = None if ref is None else self._reference_logp(x, xm, new, params, ref)
        loss = self.policy_loss(r, self._response_logp(x, xm, new), logp_ref, keep)
        if loss is None:
            return float(r.mean()), True
        if prox.in_loss:
            loss = loss + prox()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        prox.after_step(self.spec.align_learning_rate)
        return float(r.mean()), False

    def policy_loss(self, r: Tensor, logp: Tensor, logp_ref: Tensor | None, keep: Tensor) -> Tensor | None:
        """The RLOO loss ``-mean_i(A_i * sum_t log p(y_it))`` of one step's responses (rewards ``r``,
        their log-probs ``logp`` and, with the KL term, ``logp_ref``; ``keep``: the response tokens),
        or None if every prompt's K shaped rewards are equal (the step is skipped)."""
        shaped = r
        if logp_ref is not None:
            kl = sequence_kl(logp.detach(), logp_ref, keep)
            shaped = r - self.spec.align_kl_coef * kl.view(r.shape)
        flat = equal_groups(shaped)
        if bool(flat.all()):
            return None
        adv = leave_one_out_advantages(shaped)
        if bool(flat.any()):
            adv = adv.masked_fill(flat.repeat_interleave(r.shape[1]), 0.0)
        return -(adv * (logp * keep).sum(1)).mean()
