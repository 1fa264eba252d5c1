"""The process pool's transport and timing shortcuts change nothing: packed states are bit-exact, a
measurement taken apart equals the one taken in run(), rows that wait for measurements come out as if
written at once, a learner-less main process sees the workers' learner, and a bad model is one error."""
from dataclasses import fields

import pytest
import torch

from pwffsim.learn.contract import TrainJob
from pwffsim.scenario import load_scenario
from pwffsim.sim.builders import build_learner
from pwffsim.sim.engine import Simulation
from pwffsim.sim.rows import PendingRows
from pwffsim.sim.wire import PackCache, PackedState, pack_job, pack_result, unpack_job, unpack_result

TINY = ["devices.count=5", "fl.clients_per_round=3", "fl.rounds=2", "pwff.align_steps=1", "pwff.metric_prompts=2"]


def test_packed_state_is_bit_exact_for_every_dtype_and_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g)
    state = {"f32": x, "bf16": x.to(torch.bfloat16), "f16": x.to(torch.float16), "i64": torch.arange(5),
             "view": x.t(), "slice": x[1:3], "scalar": torch.tensor(3.5)}
    back = PackedState.of(state).unpack()
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v), k


def test_pack_cache_serializes_a_shared_dict_once_and_tells_dicts_apart():
    cache = PackCache(size=2)
    a, b = {"w": torch.ones(3)}, {"w": torch.zeros(3)}
    assert cache.pack(a) is cache.pack(a)
    assert cache.pack(b) is not cache.pack(a)
    assert torch.equal(cache.pack(b).unpack()["w"], torch.zeros(3))
    assert cache.pack(None) is None


@pytest.fixture(scope="module")
def learner():
    return build_learner(load_scenario(None, overrides=TINY))


def _job(learner, client=1, seed=7):
    init = learner.initial_state()
    personal = {k: v for k, v in init.items() if learner.parameter_group(k) == "lora"}
    glob = {k: v for k, v in init.items() if k not in personal}
    return TrainJob(client=client, round=0, seed=seed, start_state=init, pref_help=0.3, pref_safe=0.7,
                    prox_anchor=glob, personal_reset=personal)


def test_job_and_result_survive_the_wire(learner):
    job = _job(learner)
    back = unpack_job(pack_job(job))
    for f in ("start_state", "prox_anchor", "personal_reset"):
        assert all(torch.equal(getattr(back, f)[k], v) for k, v in getattr(job, f).items())
    assert back.personal_start is None and back.client == job.client and back.seed == job.seed
    res = learner.run(job)
    res_back = unpack_result(pack_result(res))
    assert all(torch.equal(res_back.state[k], v) for k, v in res.state.items())
    assert res_back.objective == res.objective or res.objective != res.objective


def test_measuring_apart_equals_run_exactly(learner):
    job = _job(learner, client=2, seed=11)
    whole = learner.run(job)
    trained = learner.train(job)
    assert not trained.measured and trained.eval_loss != trained.eval_loss  # NaN until measured
    learner.run(_job(learner, client=0, seed=3))  # another client's update in between changes nothing
    apart = learner.measure(job, trained)
    assert apart.measured
    for f in fields(whole):
        a, b = getattr(whole, f.name), getattr(apart, f.name)
        if f.name == "state":
            assert all(torch.equal(a[k], b[k]) for k in a)
        elif isinstance(a, float) and a != a:
            assert b != b, f.name
        else:
            assert a == b, f.name


class _Handle:
    def __init__(self):
        self.ready = False

    def done(self):
        return self.ready


class _Recorder:
    def __init__(self):
        self.rounds, self.flushes = [], 0

    def flush(self):
        self.flushes += 1


def test_pending_rows_are_written_in_order_once_measured():
    rec, seen = _Recorder(), []
    rows = PendingRows(rec, on_round=lambda row: seen.append(row["round"]))
    h0, h1 = _Handle(), _Handle()
    rows.add([h0], lambda: rec.rounds.append({"round": 0}))
    rows.add([h1], lambda: rec.rounds.append({"round": 1}))
    h1.ready = True
    rows.write_ready()
    assert rec.rounds == [] and seen == [] and rec.flushes == 1  # round 1 waits behind round 0
    h0.ready = True
    rows.write_ready()
    assert [r["round"] for r in rec.rounds] == [0, 1] and seen == [0, 1] and len(rows) == 0
    rows.add([_Handle()], lambda: rec.rounds.append({"round": 2}))
    rows.write_ready(wait=True)  # the end of the run: everything, waiting
    assert seen == [0, 1, 2]


def _tables(sim):
    return sim.rounds, sim.clients, sim.final, sim.events


@pytest.mark.parametrize("policy", ["sync", "fedbuff"])
def test_pool_tables_equal_in_process_with_metrics_and_final_evaluation(policy):
    over = TINY + [f"fl.policy='{policy}'", "fl.final_evaluation='all'"]
    ref = Simulation(load_scenario(None, overrides=over + ["execution.executor='inprocess'"]))
    ref.run()
    pooled = Simulation(load_scenario(None, overrides=over + ["execution.executor='process'", "execution.workers=2"]))
    pooled.run()
    assert type(pooled.learner).__name__ == "RemoteLearner"  # the main process built no model
    for a, b in zip(_tables(ref), _tables(pooled)):
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            assert ra.keys() == rb.keys()
            for k in ra:
                same = ra[k] == rb[k] or (isinstance(ra[k], float) and ra[k] != ra[k] and rb[k] != rb[k])
                assert same, (k, ra[k], rb[k])


def test_remote_learner_describes_the_workers_learner(learner):
    from pwffsim.sim.builders import build_learner_and_executor

    sc = load_scenario(None, overrides=TINY + ["execution.executor='process'", "execution.workers=1"])
    remote, executor = build_learner_and_executor(sc)
    try:
        init, ref = remote.initial_state(), learner.initial_state()
        assert list(init) == list(ref) and all(torch.equal(init[k], ref[k]) for k in ref)
        assert all(remote.parameter_group(k) == learner.parameter_group(k) for k in ref)
        assert remote.estimate_cost() == learner.estimate_cost()
        assert remote.charged_payload_bytes(("adapter",)) == learner.charged_payload_bytes(("adapter",))
        assert remote.num_samples(3) == learner.num_samples(3) and remote.local_scheme == learner.local_scheme
    finally:
        executor.close()


def test_a_model_the_workers_cannot_build_is_one_clear_error(tmp_path):
    sc = load_scenario(None, overrides=["execution.executor='process'", "execution.workers=1",
                                        f"model.source='{tmp_path / 'missing'}'"])
    with pytest.raises((ValueError, OSError, FileNotFoundError)) as err:
        Simulation(sc)
    assert "missing" in str(err.value)


def test_group_sizes_fill_the_workers_evenly_within_the_batch_size():
    from pwffsim.sim.pool_batches import group_sizes

    assert group_sizes(5, 5, 2) == [3, 2]
    assert group_sizes(10, 4, 2) == [3, 3, 2, 2]
    assert group_sizes(1, 8, 2) == [1]
    assert group_sizes(0, 8, 2) == []
    for n in range(1, 40):
        for size in (1, 2, 3, 8):
            for workers in (1, 2, 3):
                sizes = group_sizes(n, size, workers)
                assert sum(sizes) == n and max(sizes) <= size and min(sizes) >= max(sizes) - 1
                assert len(sizes) % workers == 0 or len(sizes) == n


def test_pool_with_batches_equals_one_by_one_in_process():
    over = TINY + ["fl.final_evaluation='trained'"]
    ref = Simulation(load_scenario(None, overrides=over))
    ref.run()
    pooled = Simulation(load_scenario(None, overrides=over + ["execution.executor='process'", "execution.workers=2",
                                                              "execution.batch_clients=3"]))
    pooled.run()
    for a, b in zip(_tables(ref), _tables(pooled)):
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            for k in ra:
                x, y = ra[k], rb[k]
                if isinstance(x, float):
                    assert (x != x and y != y) or abs(x - y) <= 1e-5 * max(1.0, abs(x)), (k, x, y)
                else:
                    assert x == y, (k, x, y)
