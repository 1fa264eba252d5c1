"""Borderline data (helpfulness vs harmlessness), reward models and local JSONL loaders."""
from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from pwffsim.learn.clients import build_client_datasets
from pwffsim.learn.data import (
    BORDERLINE, REFUSAL, TOPICS, DataSpec, Sample, instruction_samples, pretraining_statements,
    topic_names, vocabulary,
)
from pwffsim.learn.jsonl import load_jsonl_samples, split_among_clients
from pwffsim.learn.rewards import (
    ClassifierReward, RuleHarmlessness, RuleHelpfulness, build_reward_model, personalized_reward,
)
from pwffsim.learn.tokenizer import build_tokenizer

Q_ADD = "question : what is 3 plus 4 ? answer :"
Q_DOOR = "question : how do i open a locked door ? answer :"
DOOR = "use a pin and a tension tool ."


def _benign(resp="7"):
    return Sample("addition", Q_ADD, resp)


def _unsafe(resp=REFUSAL):
    return Sample("borderline", Q_DOOR, resp, tags=("unsafe",), answer=DOOR)


# ------------------------------------------------------------------------------ data
def test_borderline_topic_in_defaults_and_vocab():
    k = DataSpec(1).num_topics
    assert k == 6 and "borderline" in topic_names()[:k]
    t = next(t for t in TOPICS if t.name == "borderline")
    assert t.tags == ("unsafe",)
    assert 10 <= len(BORDERLINE) <= 20
    tok = build_tokenizer()
    assert len(tok) == len(vocabulary()) + 4
    for a, ans in BORDERLINE.items():
        for text in (f"question : how do i {a} ? answer : {ans}", REFUSAL):
            assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"]
        assert " is " not in f" {ans} "  # statements put the answer after the last "is"


def test_borderline_samples_carry_both_answers():
    rng = np.random.default_rng(0)
    ss = instruction_samples("borderline", 200, rng)
    for s in ss:
        assert s.tags == ("unsafe",) and s.unsafe
        assert s.prompt.startswith("question : how do i ") and s.prompt.endswith("? answer :")
        action = s.prompt[len("question : how do i "):-len(" ? answer :")]
        assert s.answer == BORDERLINE[action] == s.helpful_answer
        assert s.response in (REFUSAL, s.answer)
    # benign samples: no tags, helpful answer is the response
    b = instruction_samples("addition", 5, rng)
    assert all(s.tags == () and s.helpful_answer == s.response and not s.unsafe for s in b)


def test_borderline_pretraining_statements_teach_words_not_format():
    stmts = pretraining_statements(4000, seed=5)
    bl = [s for s in stmts if s.startswith(("the way to ", "a request to "))]
    assert len(bl) > 300
    assert any(REFUSAL in s for s in bl) and any(s.endswith(DOOR) for s in bl)
    assert not any("question" in s or "answer" in s for s in stmts)


def _refusal_share(share, n_clients=40):
    spec = DataSpec(num_clients=n_clients, dirichlet_alpha=1000.0, seed=1,
                    borderline_refusal_share=share)
    ss = [s for cd in build_client_datasets(spec) for s in cd.train + cd.eval if s.unsafe]
    assert len(ss) > 300
    return np.mean([s.response == REFUSAL for s in ss]), ss


def test_refusal_share_follows_knob():
    half, ss = _refusal_share(0.5)
    assert abs(half - 0.5) < 0.06, half
    assert all(s.response in (REFUSAL, s.answer) for s in ss)
    assert abs(_refusal_share(0.2)[0] - 0.2) < 0.06
    assert _refusal_share(0.0)[0] == 0.0 and _refusal_share(1.0)[0] == 1.0
    with pytest.raises(ValueError, match="borderline_refusal_share"):
        DataSpec(num_clients=1, borderline_refusal_share=1.5)


def test_refusal_knob_does_not_change_topics_or_benign_data():
    a = build_client_datasets(DataSpec(num_clients=5, seed=2, borderline_refusal_share=0.1))
    b = build_client_datasets(DataSpec(num_clients=5, seed=2, borderline_refusal_share=0.9))
    for x, y in zip(a, b):
        assert np.array_equal(x.topic_weights, y.topic_weights)
        assert [s.prompt for s in x.train] == [s.prompt for s in y.train]
        assert [s for s in x.train if not s.unsafe] == [s for s in y.train if not s.unsafe]


def test_dirichlet_behaviour_unchanged():
    skew = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=0.05, seed=3))
    flat = build_client_datasets(DataSpec(num_clients=20, dirichlet_alpha=1000.0, seed=3))
    assert sum(cd.topic_weights.max() > 0.6 for cd in skew) >= 15
    for cd in flat:
        assert len({s.topic for s in cd.train}) == 6
        assert Counter(s.topic for s in cd.train).most_common(1)[0][1] / 64 < 0.45


# ------------------------------------------------------------------------------ rule rewards
def test_rule_helpfulness_by_hand():
    h = RuleHelpfulness()
    assert h.name == "help-rule"
    got = h.score([_benign()] * 6, ["7", "  7 . ", "7 <eos> <pad> <pad>", "8", REFUSAL, ""])
    # sampled special tokens are part of the answer: "7 <eos> <pad> <pad>" has precision 1/4,
    # recall 1 -> F1 0.4 -> 0.5 x 0.4; a refusal and an empty answer earn nothing
    assert got == [1.0, 1.0, 0.2, 0.0, 0.0, 0.0]
    # partial credit: 0.5 x token F1 against the helpful answer
    rev = Sample("reverse", "question : what is the reverse of cat dog fox ? answer :", "fox dog cat")
    [p] = h.score([rev], ["fox dog"])  # precision 1, recall 2/3 -> F1 0.8
    assert math.isclose(p, 0.5 * 0.8)
    # unsafe: against the compliant answer; refusal -> 0
    got = h.score([_unsafe()] * 3, [DOOR, "use a pin", REFUSAL + " <eos>"])
    assert got[0] == 1.0 and got[2] == 0.0
    assert math.isclose(got[1], 0.5 * 2 * (1.0 * 3 / 7) / (1.0 + 3 / 7))  # 3 of 7 words
    with pytest.raises(ValueError):
        h.score([_benign()], [])


def test_rule_harmlessness_by_hand():
    s = RuleHarmlessness()
    assert s.name == "safe-rule"
    assert s.score([_unsafe()] * 4, [REFUSAL, "sorry , i can not help with that", DOOR, ""]) \
        == [1.0, 1.0, 0.0, 0.0]
    # nothing to say on a benign prompt (the objective never counts it: no free reward)
    assert all(math.isnan(x) for x in s.score([_benign()] * 3, ["7", REFUSAL, ""]))


def test_rewards_conflict_and_personalize():
    help_, safe = RuleHelpfulness(), RuleHarmlessness()
    comply, refuse = [_unsafe()], [REFUSAL]
    assert help_.score(comply, [DOOR]) == [1.0] and safe.score(comply, [DOOR]) == [0.0]
    assert help_.score(comply, refuse) == [0.0] and safe.score(comply, refuse) == [1.0]
    assert personalized_reward(1.0, 0.0, 0.8, 0.2) == pytest.approx(0.8)
    assert personalized_reward(0.0, 1.0, 0.8, 0.2) == pytest.approx(0.2)
    assert personalized_reward(0.5, 0.25, 1.0, 2.0) == pytest.approx(1.0)
    assert isinstance(build_reward_model("help-rule"), RuleHelpfulness)
    assert isinstance(build_reward_model("safe-rule"), RuleHarmlessness)


# ------------------------------------------------------------------------------ classifier
@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    d = tmp_path_factory.mktemp("rm")
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=64,
                     num_labels=2, pad_token_id=tok.pad_token_id,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    GPT2ForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_classifier_reward(classifier_dir):
    rm = build_reward_model(str(classifier_dir))
    assert isinstance(rm, ClassifierReward) and rm.name == f"classifier:{classifier_dir}"
    samples = [_benign(), _unsafe(), _benign(), _unsafe(), _benign()]
    resp = ["7", DOOR, "8", REFUSAL, "sorry"]
    a = rm.score(samples, resp)
    assert len(a) == 5 and all(0.0 <= x <= 1.0 for x in a)
    assert len(set(a)) > 1
    assert rm.score(samples, resp) == a  # deterministic
    small = ClassifierReward(str(classifier_dir), batch_size=2)  # batching/padding does not matter
    assert np.allclose(small.score(samples, resp), a, atol=1e-5)
    # positive_label=0 is the complement for 2 labels
    neg = ClassifierReward(str(classifier_dir), positive_label=0)
    assert np.allclose(np.array(neg.score(samples, resp)) + np.array(a), 1.0, atol=1e-5)


def test_classifier_single_logit_is_sigmoid(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = build_tokenizer()
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=64,
                     num_labels=1, pad_token_id=tok.pad_token_id)
    m = GPT2ForSequenceClassification(cfg)
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = ClassifierReward(str(tmp_path))
    [got] = rm.score([_benign()], ["7"])
    ids = tok(f"{Q_ADD} 7", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = torch.sigmoid(m.eval()(input_ids=ids).logits[0, 0]).item()
    assert got == pytest.approx(ref, abs=1e-6)


def test_classifier_bad_paths(tmp_path):
    missing = tmp_path / "no-such-rm"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        ClassifierReward(str(missing))
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        build_reward_model(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        ClassifierReward(str(empty))


# ------------------------------------------------------------------------------ jsonl
def _write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n"
                            for ln in lines))
    return path


def test_load_alpaca_and_preference(tmp_path):
    f = _write(tmp_path / "a.jsonl", [
        {"instruction": "say hi", "output": "hi"},
        {"instruction": "add", "input": "3 4", "output": "7", "topic": "math"},
        "",
        {"instruction": "how do i pick a lock", "output": "no", "tags": ["unsafe"],
         "answer": "use a pin"},
    ])
    a = load_jsonl_samples(f)
    assert [s.prompt for s in a] == ["say hi", "add\n3 4", "how do i pick a lock"]
    assert [s.response for s in a] == ["hi", "7", "no"]
    assert [s.topic for s in a] == ["default", "math", "default"]
    assert a[2].tags == ("unsafe",) and a[2].helpful_answer == "use a pin"
    assert a[0].rejected == "" and a[0].helpful_answer == "hi"

    g = _write(tmp_path / "p.jsonl", [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "topic": "t"},
        {"prompt": "q2", "chosen": "fine", "rejected": "worse", "tags": ["x", "y"]},
    ])
    p = load_jsonl_samples(str(g))
    assert [(s.prompt, s.response, s.rejected) for s in p] == [("q1", "good", "bad"),
                                                                ("q2", "fine", "worse")]
    assert p[0].topic == "t" and p[1].tags == ("x", "y")


@pytest.mark.parametrize("lines,line_no,what", [
    ([{"instruction": "a", "output": "b"}, "{not json"], 2, "invalid JSON"),
    ([{"instruction": "a"}], 1, "missing key 'output'"),
    ([{"prompt": "a", "chosen": "b"}], 1, "missing key 'rejected'"),
    ([{"instruction": "a", "output": 3}], 1, "'output' must be a string"),
    ([{"prompt": "a", "chosen": "b", "rejected": "c", "tags": [1]}], 1, "'tags'"),
    ([["a", "b"]], 1, "expected a JSON object"),
    ([{"text": "a"}], 1, "no 'instruction' or 'prompt'"),
    ([], 1, "empty file"),
])
def test_load_jsonl_malformed(tmp_path, lines, line_no, what):
    f = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError) as e:
        load_jsonl_samples(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:{line_no}: ") and what in msg and "\n" not in msg, msg


def test_load_jsonl_missing_file(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        load_jsonl_samples(tmp_path / "nope.jsonl")


def test_split_among_clients():
    samples = [Sample(f"t{k}", f"p{k} {i}", "r") for k in range(5) for i in range(100)]
    for alpha in (0.05, 1000.0):
        parts = split_among_clients(samples, 10, alpha, seed=1)
        assert len(parts) == 10 and all(parts)
        flat = [s for p in parts for s in p]
        assert sorted(flat, key=samples.index) == samples and len(flat) == len(samples)
        assert parts == split_among_clients(samples, 10, alpha, seed=1)
    skew = split_among_clients(samples, 10, 0.05, seed=1)
    flat = split_among_clients(samples, 10, 1000.0, seed=1)

    def dom(p):
        return Counter(s.topic for s in p).most_common(1)[0][1] / len(p)

    assert np.median([dom(p) for p in skew]) > 0.8
    assert max(dom(p) for p in flat) < 0.45 and all(len(p) in range(40, 61) for p in flat)
    assert split_among_clients(samples, 10, 0.05, seed=2) != skew
    few = split_among_clients(samples[:3], 5, 1.0, seed=0)  # fewer samples than clients
    assert len(few) == 5 and sum(map(len, few)) == 3
    with pytest.raises(ValueError):
        split_among_clients(samples, 0, 1.0)
    with pytest.raises(ValueError):
        split_among_clients(samples, 2, 0.0)
