"""The shipped small base (``model.source = "builtin-small"``): its size, what its pretraining taught,
a real local update on it, its recipe and the validation of ``model.source`` names."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from pwffsim.cli import main as cli_main
from pwffsim.learn.bases import BUILTIN_BASES, builtin_dir
from pwffsim.learn.data import DataSpec
from pwffsim.learn.model import ModelSpec, load_base, resolve_source
from pwffsim.learn.pretrain import RECIPES, gpt2_parameter_count, pretrain_base, statement_answer_loss
from pwffsim.learn.train import Learner, TrainJob, TrainSpec
from pwffsim.scenario import ScenarioError, scenario_from_dict


def _hand_gpt2_params(cfg) -> int:
    """GPT-2 with tied embeddings, written out from the config: wte V x d, wpe P x d; per block
    ln_1 and ln_2 (weight + bias, d each), c_attn d x 3d + 3d, attn c_proj d x d + d, c_fc d x 4d +
    4d, mlp c_proj 4d x d + d; ln_f 2d. The LM head is the tied wte."""
    V, P, d, L = cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer
    per_block = (2 * d) * 2 + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return V * d + P * d + L * per_block + 2 * d


@pytest.fixture(scope="module")
def small():
    return load_base(ModelSpec(source="builtin-small"))


def test_small_base_parameter_count_is_the_gpt2_formula(small):
    model, tok = small
    cfg = model.config
    assert (cfg.model_type, cfg.n_layer, cfg.n_embd, cfg.n_head) == ("gpt2", 4, 256, 4)
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    n = sum(p.numel() for p in model.parameters())  # tied: counted once
    assert n == _hand_gpt2_params(cfg)
    # 261 * 256 + 128 * 256 + 4 * (4 * 256 + 12 * 256**2 + 9 * 256) + 2 * 256, worked by hand:
    assert n == 66_816 + 32_768 + 4 * 789_760 + 512 == 3_259_136
    assert gpt2_parameter_count(4, 256, 128, 261) == n
    assert gpt2_parameter_count(2, 64, 128, 261) == 124_992  # the tiny base's count
    # Same closed-vocabulary tokenizer as builtin-tiny, same positions.
    tiny_tok = json.loads((builtin_dir("builtin-tiny") / "tokenizer.json").read_text())["model"]["vocab"]
    assert tok.get_vocab() == tiny_tok and len(tok) == cfg.vocab_size == 261
    assert cfg.n_positions == 128


def test_small_base_ships_fp16_and_loads_fp32(small):
    model, _ = small
    path = builtin_dir("builtin-small") / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert path.stat().st_size < 8_000_000
    assert resolve_source("builtin-small") == builtin_dir("builtin-small")


def test_small_base_knows_the_statements(small):
    from transformers import GPT2LMHeadModel

    model, tok = small
    trained = statement_answer_loss(model, tok, n=16)
    torch.manual_seed(0)
    rand = statement_answer_loss(GPT2LMHeadModel(model.config).eval(), tok, n=16)
    for topic, loss in trained.items():
        assert loss < 0.5 * rand[topic], (topic, loss, rand[topic])
    assert min(rand.values()) > 3.0  # random init: near ln(261) = 5.56 nats


def test_local_update_on_small_base():
    spec = TrainSpec(local_steps=1, batch_size=2, metric_prompts=0, align_steps=0, eval_batches=1)
    learner = Learner(ModelSpec(source="builtin-small"), DataSpec(num_clients=2, train_samples_per_client=4,
                                                                   eval_samples_per_client=2), spec)
    L, d, r, m = 4, 256, 8, 16
    counts = learner.param_counts
    assert counts["lora"] == L * r * (d + 3 * d)  # c_attn: A r x d, B 3d x r
    assert counts["adapter"] == L * (d * m + m + m * d + d)  # down d->m (+bias), up m->d (+bias)
    assert counts["total"] == 3_259_136 + counts["lora"] + counts["adapter"]
    state = learner.initial_state()
    res = learner.run(TrainJob(client=0, round=0, seed=0, start_state=state))
    assert torch.isfinite(torch.tensor([res.train_loss, res.eval_loss])).all()
    moved = [k for k in state if not torch.equal(state[k], res.state[k])]
    assert any("lora_B" in k for k in moved) and any("adapter.up" in k for k in moved)
    assert res.flops > 0


def test_pretrain_small_recipe_is_deterministic(tmp_path, capsys, monkeypatch):
    # The small recipe with a short corpus and a short final evaluation (the test's runtime).
    monkeypatch.setitem(RECIPES, "small", replace(RECIPES["small"], n_statements=400, eval_statements=16))
    assert cli_main(["pretrain", str(tmp_path / "a"), "--size", "small", "--steps", "1"]) == 0
    capsys.readouterr()
    pretrain_base(tmp_path / "b", "small", steps=1, verbose=False)
    a, b = ((tmp_path / x / "model.safetensors").read_bytes() for x in "ab")
    assert a == b
    stats = json.loads((tmp_path / "a" / "pretrain_stats.json").read_text())
    assert stats["size"] == "small" and stats["steps"] == 1 and stats["weights_dtype"] == "fp16"
    assert stats["num_parameters"] == 3_259_136
    with pytest.raises(ValueError, match="unknown base size"):
        pretrain_base(tmp_path / "c", "huge")


@pytest.mark.parametrize("name", ["builtin-huge", "builtin-Small"])
def test_unknown_builtin_source_fails_validation_in_one_line(name):
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict({"model": {"source": name}})
    msg = str(e.value)
    assert "\n" not in msg and "model.source" in msg
    assert all(repr(n) in msg for n in BUILTIN_BASES) and "'smollm2-135m'" in msg
    with pytest.raises(ValueError, match="builtin-small"):
        resolve_source(name)


def test_validate_cli_accepts_small_and_names_the_choices(tmp_path, capsys):
    ok = tmp_path / "small.toml"
    ok.write_text('[model]\nsource = "builtin-small"\n')
    assert cli_main(["validate", str(ok)]) == 0
    assert ": ok (" in capsys.readouterr().out
    missing = tmp_path / "no-such-checkpoint"
    rc = cli_main(["validate", str(ok), "--set", f"model.source={missing}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "model.source" in err
    assert "'builtin-tiny'" in err and "'builtin-small'" in err
