"""Local data from JSON Lines files in a scenario (data.source = "jsonl"): loading from a scenario file,
the by-field / dirichlet / iid splits, the field mapping, eval_path vs eval_share, one-line errors."""
import json
import math

import numpy as np
import pytest

from pwffsim.cli import main as cli_main
from pwffsim.learn.batches import ClientBatches
from pwffsim.learn.data import vocabulary
from pwffsim.learn.filedata import JsonlDataSpec, file_index, jsonl_client_data, make_data_spec
from pwffsim.learn.tokenizer import build_tokenizer
from pwffsim.scenario import ScenarioError, load_scenario
from pwffsim.sim.builders import learner_spec_kwargs, train_sample_counts


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _add(a, b, **extra):
    return {"prompt": f"question : what is {a} plus {b} ? answer :", "response": str(a + b), "topic": "addition",
            **extra}


def _color(obj, color, **extra):
    return {"prompt": f"question : what is the color of {obj} ? answer :", "response": color, "topic": "color",
            **extra}


# 5 rows of client "a", 3 of client "b"; every word is in the shipped vocabulary
ROWS_AB = [_add(i, 2, client="a") for i in range(5)] + [
    _color("sky", "blue", client="b"), _color("grass", "green", client="b"), _color("snow", "white", client="b")]


def _scenario_toml(path, data_lines):
    path.write_text("\n".join([
        "[devices]", "count = 2", "[fl]", "rounds = 1", "clients_per_round = 2", "local_steps = 1",
        "batch_size = 2", "[pwff]", "align_steps = 0", "metric_prompts = 0", "[data]", *data_lines, ""]))
    return path


def test_words_of_the_test_rows_are_in_the_vocabulary():
    vocab = set(vocabulary())
    assert all(w in vocab for r in ROWS_AB for w in (r["prompt"] + " " + r["response"]).split())


def test_jsonl_scenario_end_to_end(tmp_path, monkeypatch):
    from pwffsim.sim.engine import Simulation

    _write(tmp_path / "data" / "train.jsonl", ROWS_AB)
    toml = _scenario_toml(tmp_path / "s.toml", ['source = "jsonl"', 'train_path = "data/train.jsonl"', 'split = "by-field"'])
    monkeypatch.chdir("/")  # relative to the scenario file, not to the working directory
    sc = load_scenario(toml)
    assert sc.data.train_path == str((tmp_path / "data" / "train.jsonl").resolve())
    sim = Simulation(sc)
    # by-field, held out round(0.2 n) in [1, n - 1]: a has 5 rows -> 1 held out, b has 3 -> round(0.6) = 1
    assert [sim.learner.num_samples(c) for c in (0, 1)] == [4, 2]
    rows_of = {"a": [r["prompt"] for r in ROWS_AB[:5]], "b": [r["prompt"] for r in ROWS_AB[5:]]}
    for c, cid in ((0, "a"), (1, "b")):
        d = sim.learner.clients[c]
        assert sorted(s.prompt for s in (*d.train, *d.eval)) == sorted(rows_of[cid])
        assert len(d.eval) == 1
    # the longest prompt, "question : what is the color of grass ? answer :", is 11 words
    assert sim.learner.prompt_len == 11
    assert sim.learner.batches.token_report.unknown_tokens == 0
    sim.run()
    assert sim.rounds[0]["aggregated"] == 2 and math.isfinite(sim.rounds[0]["train_loss"])
    trained = {r["client"] for r in sim.clients if math.isfinite(r["train_loss"])}
    assert trained == {0, 1}
    assert train_sample_counts(sc) == [4, 2]  # network-only mode's weights, torch-free


def test_by_field_split_gives_each_client_exactly_its_rows(tmp_path):
    ids = [3, "x", 1, 3, "b", 1, "x", 3]
    train = _write(tmp_path / "t.jsonl", [_add(i, 1, client=cid) for i, cid in enumerate(ids)])
    ev = _write(tmp_path / "e.jsonl", [_add(9, k, client=cid) for k, cid in enumerate([1, 3, "b", "x", 1])])
    spec = JsonlDataSpec(num_clients=4, train_path=str(train), eval_path=str(ev), split="by-field")
    # device order: integers numerically, then strings: 1, 3, "b", "x"
    want_train = {0: [2, 5], 1: [0, 3, 7], 2: [4], 3: [1, 6]}   # line indices of each id, file order
    want_eval = {0: [0, 4], 1: [1], 2: [2], 3: [3]}
    for c in range(4):
        d = jsonl_client_data(spec, c)
        assert [s.prompt for s in d.train] == [_add(i, 1)["prompt"] for i in want_train[c]]
        assert [s.prompt for s in d.eval] == [_add(9, k)["prompt"] for k in want_eval[c]]
        assert spec.train_samples(c) == len(want_train[c])  # the FedAvg weight: its row count
    # fewer devices use the first ids; more devices than ids is an error naming both numbers
    assert jsonl_client_data(JsonlDataSpec(num_clients=2, train_path=str(train), eval_path=str(ev),
                                           split="by-field"), 1).train == jsonl_client_data(spec, 1).train
    with pytest.raises(ValueError, match=r"5 devices but 4 distinct ids"):
        file_index(JsonlDataSpec(num_clients=5, train_path=str(train), eval_path=str(ev), split="by-field"))


def test_by_field_eval_share_and_missing_eval_rows(tmp_path):
    train = _write(tmp_path / "t.jsonl", [_add(i % 10, i // 10, client="a") for i in range(10)]
                   + [_add(0, 0, client="b")])
    spec = JsonlDataSpec(num_clients=2, train_path=str(train), split="by-field", eval_share=0.3)
    with pytest.raises(ValueError, match=r"t.jsonl:11: field 'client' .*'b' \(device 1\) has 1 row"):
        file_index(spec)
    one = JsonlDataSpec(num_clients=1, train_path=str(train), split="by-field", eval_share=0.3)
    d = jsonl_client_data(one, 0)
    assert (len(d.train), len(d.eval)) == (7, 3)  # round(0.3 * 10) = 3 held out
    assert one.train_samples(0) == 7
    ev = _write(tmp_path / "e.jsonl", [_add(1, 1, client="a")])
    with pytest.raises(ValueError, match=r"e.jsonl:0: field 'client' .*no held-out row of client id 'b'"):
        file_index(JsonlDataSpec(num_clients=2, train_path=str(train), eval_path=str(ev), split="by-field"))


def _pool_file(tmp_path):
    """10 addition rows, 5 color rows, 5 capital-less 'larger' rows (three labels)."""
    rows = ([_add(i, 3) for i in range(10)] + [_color(o, c) for o, c in
            [("sky", "blue"), ("sea", "blue"), ("snow", "white"), ("milk", "white"), ("coal", "black")]]
            + [{"prompt": f"question : what is the larger of {i} and 20 ? answer :", "response": "20",
                "topic": "larger"} for i in range(5)])
    return _write(tmp_path / "pool.jsonl", rows), rows


def test_dirichlet_split_is_deterministic_and_independent_of_the_population(tmp_path):
    path, rows = _pool_file(tmp_path)
    small = JsonlDataSpec(num_clients=3, train_path=str(path), split="dirichlet", train_samples_per_client=6,
                          eval_samples_per_client=2, seed=5)
    big = JsonlDataSpec(num_clients=40, train_path=str(path), split="dirichlet", train_samples_per_client=6,
                        eval_samples_per_client=2, seed=5)
    for c in range(3):
        a, b = jsonl_client_data(small, c), jsonl_client_data(big, c)
        assert a.train == b.train and a.eval == b.eval
        assert np.array_equal(a.topic_weights, b.topic_weights)
        assert a.train == jsonl_client_data(small, c).train
        assert (len(a.train), len(a.eval)) == (6, 2)
    assert [jsonl_client_data(big, c).train for c in range(8)] != [jsonl_client_data(big, 0).train] * 8
    # held out without eval_path: round(0.2 m) of each label's m rows (10 -> 2, 5 -> 1, 5 -> 1), the same
    # rows for every client, disjoint from the training pool
    ix = file_index(small)
    assert ix.labels == ["addition", "color", "larger"]
    assert [len(h) for h in ix.eval_pool] == [2, 1, 1] and [len(p) for p in ix.pool] == [8, 4, 4]
    for p, h in zip(ix.pool, ix.eval_pool):
        assert not set(p) & set(h)
    held = {ix.train.samples[int(i)].prompt for h in ix.eval_pool for i in h}
    for c in range(3):
        d = jsonl_client_data(big, c)
        assert not {s.prompt for s in d.train} & held and {s.prompt for s in d.eval} <= held
    # a tiny alpha puts (numerically) all of a client's mix on one label: all its rows are of it
    sharp = JsonlDataSpec(num_clients=4, train_path=str(path), split="dirichlet", train_samples_per_client=12,
                          dirichlet_alpha=1e-3, seed=1)
    for c in range(4):
        d = jsonl_client_data(sharp, c)
        assert {s.topic for s in d.train} == {ix.labels[int(np.argmax(d.topic_weights))]}


def test_iid_and_eval_path(tmp_path):
    path, rows = _pool_file(tmp_path)
    ev = _write(tmp_path / "ev.jsonl", [_color("frog", "green"), _color("leaf", "green")])
    spec = JsonlDataSpec(num_clients=2, train_path=str(path), eval_path=str(ev), split="iid",
                         train_samples_per_client=20, eval_samples_per_client=2)
    d = jsonl_client_data(spec, 1)
    # 20 of the 20 rows without replacement: every training row once; the eval rows are the eval file's
    assert sorted(s.prompt for s in d.train) == sorted(r["prompt"] for r in rows)
    assert sorted(s.prompt for s in d.eval) == sorted(r["prompt"] for r in
                                                      [_color("frog", "green"), _color("leaf", "green")])
    shared = JsonlDataSpec(num_clients=2, train_path=str(path), split="iid", train_samples_per_client=3)
    ix = file_index(shared)
    assert [len(p) for p in ix.pool] == [16] and [len(h) for h in ix.eval_pool] == [4]  # round(0.2 * 20)


def test_field_mapping_from_a_scenario(tmp_path):
    _write(tmp_path / "alpaca.jsonl", [
        {"instruction": "question : what is 2 plus 2 ? answer :", "output": "4", "category": "addition",
         "user": 7, "labels": ["unsafe"], "good": "4", "bad": "5"},
        {"instruction": "question : what is the color of sky ? answer :", "output": "blue", "category": "color",
         "user": 2},
    ])
    toml = _scenario_toml(tmp_path / "s.toml", [
        'source = "jsonl"', 'train_path = "alpaca.jsonl"', 'split = "by-field"', 'eval_share = 0.5',
        "[data.fields]", 'prompt = "instruction"', 'response = "output"', 'topic = "category"', 'client = "user"',
        'tags = "labels"', 'answer = "good"', 'rejected = "bad"'])
    # one row per client cannot hold out: the by-field error names the file, the line and the mapped key
    with pytest.raises(ScenarioError, match=r"alpaca.jsonl:2: field 'client' \(JSON key 'user'\)"):
        from pwffsim.scenario import preflight

        preflight.check(load_scenario(toml), str(toml))
    spec = make_data_spec(**learner_spec_kwargs(load_scenario(toml, overrides=["data.split='iid'"]))["data"])
    s = file_index(spec).train.samples
    assert (s[0].prompt, s[0].response, s[0].topic, s[0].tags, s[0].answer, s[0].rejected) == (
        "question : what is 2 plus 2 ? answer :", "4", "addition", ("unsafe",), "4", "5")
    assert file_index(spec).train.clients == (7, 2)
    assert (s[1].tags, s[1].answer, s[1].rejected) == ((), "", "")


@pytest.mark.parametrize("row,fields,what", [
    ("{not json", {}, "invalid JSON"),
    ({"response": "4", "client": "a"}, {}, "field 'prompt' (JSON key 'prompt'): missing"),
    ({"instruction": "q", "client": "a"}, {"prompt": "instruction", "response": "output"},
     "field 'response' (JSON key 'output'): missing"),
    ({"prompt": "q", "response": 4, "client": "a"}, {}, "field 'response' (JSON key 'response'): expected a string, got int"),
    ({"prompt": "q", "response": "4", "tags": [1], "client": "a"}, {}, "field 'tags' (JSON key 'tags')"),
    ({"prompt": "q", "response": "4", "topic": 3, "client": "a"}, {}, "field 'topic' (JSON key 'topic'): expected a string"),
    ({"prompt": "q", "response": "4"}, {}, "field 'client' (JSON key 'client'): missing"),
    ({"prompt": "q", "response": "4", "client": True}, {}, "field 'client' (JSON key 'client'): expected a string or an integer, got bool"),
    ([1, 2], {}, "expected a JSON object"),
])
def test_bad_rows_name_the_file_the_line_and_the_field(tmp_path, row, fields, what):
    good = {**_add(1, 1, client="a"), "instruction": "q", "output": "2"}  # a good row under either mapping
    path = _write(tmp_path / "bad.jsonl", [good, "", row])
    spec = JsonlDataSpec(num_clients=1, train_path=str(path), fields=fields, split="by-field")
    with pytest.raises(ValueError) as e:
        file_index(spec)
    msg = str(e.value)
    assert msg.startswith(f"{path}:3: ") and what in msg and "\n" not in msg, msg


def test_scenario_errors_and_cli_status(tmp_path, capsys):
    toml = _scenario_toml(tmp_path / "s.toml", ['source = "jsonl"', 'train_path = "nope.jsonl"'])
    with pytest.raises(ScenarioError, match=r"field 'data.train_path': an existing file"):
        load_scenario(toml)
    with pytest.raises(ScenarioError, match=r"field 'data': .*needs train_path"):
        load_scenario(_scenario_toml(tmp_path / "s2.toml", ['source = "jsonl"']))
    with pytest.raises(ScenarioError, match=r"only with source='jsonl'"):
        load_scenario(_scenario_toml(tmp_path / "s3.toml", ['train_path = "x.jsonl"']))
    _write(tmp_path / "bad.jsonl", [_add(1, 1), {"prompt": "q"}])
    bad = _scenario_toml(tmp_path / "s4.toml", ['source = "jsonl"', 'train_path = "bad.jsonl"', 'split = "iid"'])
    assert cli_main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'data.train_path'" in err and "bad.jsonl:2: field 'response'" in err and "\n" not in err


def test_out_of_vocabulary_words_and_long_rows_are_reported(tmp_path):
    path = _write(tmp_path / "oov.jsonl", [
        {"prompt": "question : what is zebra ? answer :", "response": "3"},           # 8 + 1 tokens, 1 unknown
        {"prompt": "question : what is 1 plus 2 ? answer :", "response": "okapi 3"},  # 10 + 2 tokens, 1 unknown
    ])
    ev = _write(tmp_path / "ev.jsonl", [_color("sky", "blue")])                       # 11 + 1 tokens
    spec = JsonlDataSpec(num_clients=1, train_path=str(path), eval_path=str(ev), split="iid",
                         train_samples_per_client=2)
    # 2 unknown of 9 + 12 + 12 = 33 tokens (6.1%); rows of 10, 13 and 13 tokens (+ eos) against seq_len 12
    with pytest.warns(UserWarning, match=r"2 of 33 tokens .*\(6.1%\) are out of the tokenizer's vocabulary"
                                         r".*2 of 3 rows are longer than seq_len 12 tokens \(the longest 13\)"):
        b = ClientBatches(spec, build_tokenizer(), seq_len=12, eval_rows=2, metric_prompts=1)
    assert b.prompt_len == 11  # the files' longest prompt, not the built-in topics'
    ids, labels = b[0].train
    assert ids.shape == (2, 12)  # the 13-token row is cut to seq_len
    assert b[0].metric_prompts[0].shape == (1, 11)
