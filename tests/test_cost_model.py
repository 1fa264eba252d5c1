"""The LLM-true cost model (model.cost_model): shipped architectures built on torch's meta device count
exactly, LoRA and adapters by hand, FLOPs per token against FlopCounterMode on tiny random-init models
of the same families, and a run charged for Llama-3.2-1B while the tiny GPT-2 trains."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pwffsim.learn.costconfig import SHIPPED, read_cost_config
from pwffsim.learn.costmodel import (ChargedModel, architecture_config, build_architecture,
                                     map_target_modules)
from pwffsim.learn.model import ModelSpec

R, M = 8, 16  # ModelSpec defaults: LoRA rank, adapter width
# The trained tiny GPT-2's default LoRA target (fused q/k/v), as the Learner passes it on.
GPT2_TARGETS = ("c_attn",)

# Exact parameter totals of the public models (base, no LoRA or adapters).
TOTALS = {
    "llama-3.2-1b": 1_235_814_400,   # tied embeddings
    "qwen2.5-0.5b": 494_032_768,     # tied embeddings, q/k/v biases
    "llama-2-7b": 6_738_415_616,     # untied LM head
    "phi-3-mini": 3_821_079_552,     # fused qkv_proj / gate_up_proj, untied LM head
    "gemma-2-2b": 2_614_341_888,     # tied embeddings, 8 heads x 256 != 2304
}


def _charged(name: str, spec: ModelSpec = ModelSpec(), targets=GPT2_TARGETS) -> ChargedModel:
    model = build_architecture(architecture_config(name), spec, targets, "meta", where=name)
    return ChargedModel.of(name, model, spec.update_dtype)


@pytest.fixture(scope="module")
def charged() -> dict[str, ChargedModel]:
    return {name: _charged(name) for name in SHIPPED}


def _shape(name: str) -> dict:
    c = read_cost_config(name)
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    return dict(L=c["num_hidden_layers"], d=c["hidden_size"], q=heads * head_dim, kv=kv * head_dim,
                fused=c["model_type"] == "phi3")


def _hand_lora(name: str) -> int:
    """LoRA on q, k, v (GPT-2's c_attn mapped): A is d x r, B is r x out; grouped-query k/v are
    narrower (kv heads x head_dim). Phi-3's fused qkv_proj: one A, one B of width q + 2 kv."""
    s = _shape(name)
    if s["fused"]:
        return s["L"] * R * (s["d"] + s["q"] + 2 * s["kv"])
    return s["L"] * R * ((s["d"] + s["q"]) + 2 * (s["d"] + s["kv"]))


def _hand_adapter(name: str) -> int:
    s = _shape(name)
    return s["L"] * (s["d"] * M + M + M * s["d"] + s["d"])  # down W, b; up W, b


@pytest.mark.parametrize("name", sorted(TOTALS))
def test_shipped_architectures_count_exactly(charged, name):
    c = charged[name]
    assert c.base_params == TOTALS[name]
    assert c.group_params == {"lora": _hand_lora(name), "adapter": _hand_adapter(name)}
    assert c.payload_bytes(("adapter",)) == 4 * _hand_adapter(name)
    assert c.payload_bytes(("lora", "adapter")) == 4 * (_hand_lora(name) + _hand_adapter(name))
    assert c.payload_bytes(()) == 0


def test_llama_3_2_1b_by_hand(charged):
    """Llama-3.2-1B: 16 layers, d 2048, 32 query / 8 KV heads of 64: k/v are 512 wide."""
    c = charged["llama-3.2-1b"]
    assert c.group_params["lora"] == 16 * 8 * ((2048 + 2048) + 2 * (2048 + 512)) == 1_179_648
    assert c.group_params["adapter"] == 16 * (2 * 2048 * 16 + 16 + 2048) == 1_081_600
    assert c.target_modules == ("k_proj", "q_proj", "v_proj")
    t = c.per_token
    embed, norms = 128256 * 2048, 16 * 2 * 2048 + 2048
    lora_w, adapter_w = 1_179_648, 16 * 2 * 2048 * 16
    # every matmul weight: the base minus the embedding lookup and the norms, plus the tied LM head
    assert t.matmul_weight_params == TOTALS["llama-3.2-1b"] - embed - norms + embed + lora_w + adapter_w
    # no input gradient: the first block's q, k, v and their LoRA A (they read the frozen embedding)
    assert t.no_input_grad_params == (2048 * 2048 + 2 * 2048 * 512) + 3 * 8 * 2048
    assert t.trainable_matmul_params == lora_w + adapter_w
    assert (t.n_layer, t.d_model, t.attn_width) == (16, 2048, 2048)


def test_attention_width_is_heads_times_head_dim(charged):
    assert charged["gemma-2-2b"].per_token.attn_width == 8 * 256
    assert charged["gemma-2-2b"].per_token.d_model == 2304


def test_update_dtype_sets_the_payload_bytes():
    for dtype, nbytes in (("fp32", 4), ("bf16", 2), ("fp16", 2)):
        c = _charged("qwen2.5-0.5b", ModelSpec(update_dtype=dtype))
        assert c.payload_bytes(("adapter",)) == nbytes * _hand_adapter("qwen2.5-0.5b")
    with pytest.raises(ValueError, match="update_dtype"):
        ModelSpec(update_dtype="int8")


def test_building_on_meta_takes_no_memory_and_no_random_draws():
    before = torch.get_rng_state()
    model = build_architecture(architecture_config("llama-2-7b"), ModelSpec(), GPT2_TARGETS, "meta")
    assert all(p.is_meta for p in model.parameters())
    assert torch.equal(before, torch.get_rng_state())


def test_target_modules_are_mapped_by_role():
    llama = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
             "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
             "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]
    phi3 = ["model.layers.0.self_attn.qkv_proj", "model.layers.0.self_attn.o_proj",
            "model.layers.0.mlp.gate_up_proj", "model.layers.0.mlp.down_proj"]
    assert map_target_modules(["c_attn"], llama) == ["k_proj", "q_proj", "v_proj"]
    assert map_target_modules(["c_attn", "c_proj"], llama) == ["down_proj", "k_proj", "o_proj",
                                                               "q_proj", "v_proj"]
    assert map_target_modules(["c_fc"], phi3) == ["gate_up_proj"]
    assert map_target_modules(["q_proj", "o_proj"], llama) == ["o_proj", "q_proj"]  # kept as named
    assert map_target_modules(["v_proj"], phi3) == ["qkv_proj"]
    with pytest.raises(ValueError, match="'wte' has no counterpart"):
        map_target_modules(["wte"], llama, "'llama'")


# ------------------------------------------------------------------ FLOPs against FlopCounterMode
TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=300, max_position_embeddings=256)


def _tiny_config(tmp_path, name: str, **extra):
    """A 2-layer random-init model of ``name``'s family (grouped-query attention: 4 query heads,
    2 KV heads), written as a local config.json."""
    raw = {**read_cost_config(name), **TINY, **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return architecture_config(str(path))


ALL = ("c_attn", "c_proj", "c_fc")  # LoRA on every projection (gated MLPs' three included)


@pytest.mark.parametrize("name,extra,targets", [
    ("llama-3.2-1b", {}, GPT2_TARGETS), ("llama-3.2-1b", {}, ALL), ("qwen2.5-0.5b", {}, ALL),
    ("llama-2-7b", {"num_key_value_heads": 4}, ALL), ("phi-3-mini", {"pad_token_id": 0}, ALL),
    ("gemma-2-2b", {"head_dim": 24}, ALL)])  # Gemma: 4 heads x 24 = 96 != d = 64
def test_flops_per_token_match_flop_counter(tmp_path, name, extra, targets):
    torch.manual_seed(0)
    cfg = _tiny_config(tmp_path, name, **extra)
    model = build_architecture(cfg, ModelSpec(), targets, "cpu")
    per_token = ChargedModel.of(name, model).per_token
    B, S = 2, 24
    ids = torch.randint(0, TINY["vocab_size"], (B, S), generator=torch.Generator().manual_seed(1))
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    ours = B * S * (per_token.forward(S) + per_token.backward(S))
    assert abs(ours / counter.get_total_flops() - 1) < 0.01, (ours, counter.get_total_flops())
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids)
    assert abs(B * S * per_token.forward(S) / counter.get_total_flops() - 1) < 0.01


# ------------------------------------------------------------------ end to end
def _run(tmp_path, *sets):
    from pwffsim.scenario import load_scenario
    from pwffsim.sim.engine import Simulation

    sc = load_scenario(None, overrides=[
        "fl.rounds=1", "devices.count=3", "fl.clients_per_round=2", "fl.local_steps=1",
        "data.train_samples_per_client=8", "pwff.align_steps=0", "pwff.metric_prompts=2", *sets])
    sim = Simulation(sc, out_dir=str(tmp_path))
    return sim, sim.run()


def test_a_run_charged_for_llama_3_2_1b(tmp_path):
    """The tiny GPT-2 trains; every upload carries Llama-3.2-1B's adapters (the pwff scheme's
    global part) in fp32, every compute lasts Llama-3.2-1B's charged FLOPs / device FLOP/s."""
    sim, summary = _run(tmp_path, "model.cost_model='llama-3.2-1b'")
    global_params = 16 * (2 * 2048 * 16 + 16 + 2048)  # 16 blocks' adapters: down/up weights, biases
    assert sim.sc.pwff.global_groups == ("adapter",)
    ups = [e for e in sim.events if e["kind"] == "upload" and e["status"] == "ok"]
    assert ups and all(e["bytes"] == global_params * 4 == 4_326_400 for e in ups)
    flops = sim.learner.estimate_cost()[0]
    t = sim.learner.charged.per_token
    S, tokens = sim.sc.fl.seq_len, sim.sc.fl.local_steps * sim.sc.fl.batch_size * sim.sc.fl.seq_len
    assert flops == pytest.approx(tokens * (t.forward(S) + t.backward(S)), rel=1e-12)
    assert flops > 1000 * sim.learner.cost_breakdown["matmul_weight_params"]  # an LLM's, not the toy's
    computes = [e for e in sim.events if e["kind"] == "compute"]
    assert computes
    for e in computes:
        prof = sim.devices[e["client"]].profile
        assert e["t_end_s"] - e["t_start_s"] == pytest.approx(flops / prof.flops_per_s, rel=1e-9)
    assert sim.learner.param_counts["total"] < 200_000  # what trained is still the tiny model
    assert summary["trained_model"] == "builtin-tiny" and summary["charged_model"] == "llama-3.2-1b"
    assert summary["payload_bytes_per_transfer"] == 4_326_400
    assert summary["bytes_up"] == 4_326_400 * summary["aggregated_updates"]
    assert json.loads((tmp_path / "summary.json").read_text())["charged_model"] == "llama-3.2-1b"


def test_without_a_cost_model_the_trained_model_is_charged(tmp_path):
    from pwffsim.learn.aggregate import state_nbytes

    sim, summary = _run(tmp_path, "pwff.scheme='fedavg-all'")
    assert sim.state.payload_bytes() == state_nbytes(sim.state.global_state)
    assert summary["trained_model"] == summary["charged_model"] == "builtin-tiny"
    cb = sim.learner.cost_breakdown
    assert cb["matmul_weight_params"] == sim.learner.charged.per_token.matmul_weight_params < 200_000
    assert sim.learner.charged_payload_bytes(("lora", "adapter")) == state_nbytes(
        sim.learner.initial_state())
    bf16 = _run(tmp_path / "bf16", "pwff.scheme='fedavg-all'", "model.update_dtype='bf16'")[1]
    assert bf16["payload_bytes_per_transfer"] * 2 == summary["payload_bytes_per_transfer"]


def test_a_learner_without_charged_payload_is_charged_its_tensors(stub_learner):
    from pwffsim.sim.state import ModelSplit, RunState

    init = stub_learner.initial_state()
    split = ModelSplit.of(stub_learner, init, ("lora",))
    assert split.charged_payload_bytes is None
    state = RunState(global_state=split.global_part(init),
                     charged_payload_bytes=split.charged_payload_bytes)
    assert state.payload_bytes() == stub_learner.payload_bytes


@pytest.mark.parametrize("content,what", [
    (None, "no such file"), ("{oops", "not valid JSON"), ('{"model_type": "llama"}', "num_hidden_layers")])
def test_a_missing_or_malformed_cost_model_is_one_line_exit_2(tmp_path, capsys, content, what):
    from pwffsim.cli import main

    if content is not None:
        (tmp_path / "config.json").write_text(content)
    scenario = tmp_path / "s.toml"
    scenario.write_text('[model]\ncost_model = "config.json"\n')
    assert main(["validate", str(scenario)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and what in err
    assert str(scenario) in err and "model.cost_model" in err and str(tmp_path / "config.json") in err
