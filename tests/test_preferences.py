"""The preference-divergent task: camps, data that follow them, rewards of every family, metrics."""
import math

import numpy as np
import pytest

from pwffsim.learn.clients import client_data, client_metric_samples, client_preference
from pwffsim.learn.data import REFUSAL, TOPICS, DataSpec, Sample
from pwffsim.learn.metrics import always_refuse_metrics, reward_metrics
from pwffsim.learn.preferences import Preference, camp, divergent_preference
from pwffsim.learn.rewards import RuleHarmlessness, RuleHelpfulness, prompt_reward
from pwffsim.scenario import ScenarioError, load_scenario
from pwffsim.sim.builders import client_preferences


class _Rules:
    help, safe = RuleHelpfulness(), RuleHarmlessness()

    def score(self, samples, responses):
        return self.help.score(samples, responses), self.safe.score(samples, responses)


def _styled(w_concise):
    targets = tuple((t, w) for t, w in (("7", w_concise), ("3 plus 4 is 7 .", 1 - w_concise)) if w > 0)
    return Sample("addition", "question : what is 3 plus 4 ? answer :", "7", answer="7", targets=targets)


DOOR = "use a pin and a tension tool ."
BORDER = Sample("borderline", "question : how do i open a locked door ? answer :", REFUSAL, ("unsafe",), DOOR)


def test_divergence_zero_gives_every_device_the_same_weights():
    prefs = {divergent_preference(0.0, 7, k) for k in range(200)}
    assert prefs == {Preference(w_concise=1.0, w_help=0.0)}


def test_divergence_one_gives_two_opposed_camps():
    prefs = [divergent_preference(1.0, 7, k) for k in range(400)]
    assert set(prefs) == {Preference(1.0, 0.0), Preference(0.0, 1.0)}
    share = sum(p.w_help == 1.0 for p in prefs) / len(prefs)
    assert 0.4 < share < 0.6  # a fair coin per device
    # the camps do not move with the divergence (common random numbers); weights scale with it
    for k in range(50):
        p = divergent_preference(0.5, 7, k)
        assert p.w_help == 0.5 * camp(7, k) and p.w_concise == 1 - p.w_help


def test_orchestrator_reads_the_learners_weights():
    sc = load_scenario(None, overrides=["devices.count=30", "data.preference_divergence=1.0"])
    spec = DataSpec(num_clients=30, preference_divergence=1.0, seed=sc.seed)
    assert list(client_preferences(sc)) == [client_preference(spec, k).w_help for k in range(30)]
    with pytest.raises(ScenarioError, match="preference_divergence"):
        load_scenario(None, overrides=["data.preference_divergence=1.0", "pwff.preference='fixed'"])
    with pytest.raises(ScenarioError):
        load_scenario(None, overrides=["data.preference_divergence=1.5"])


def test_local_data_follow_the_camp():
    spec = DataSpec(num_clients=40, preference_divergence=1.0, train_samples_per_client=64)
    statements = {f[0]: f[2] for t in TOPICS[:6] for f in t.every()}
    for k in range(12):
        p = client_preference(spec, k)
        for s in client_data(spec, k).train:
            if s.unsafe:
                assert s.response == (REFUSAL if p.w_safe == 1 else s.answer)
            else:
                assert s.response == (s.answer if p.w_concise == 1 else statements[s.prompt])
    half = DataSpec(num_clients=40, preference_divergence=0.5, train_samples_per_client=400)
    k = next(c for c in range(40) if camp(half.seed, c) == 1)  # w_concise = w_safe = 0.5
    train = client_data(half, k).train
    concise = np.mean([s.response == s.answer for s in train if not s.unsafe])
    refused = np.mean([s.response == REFUSAL for s in train if s.unsafe])
    assert 0.4 < concise < 0.6 and 0.3 < refused < 0.7


def test_without_divergence_the_original_data_stay():
    spec = DataSpec(num_clients=3)
    assert client_preference(spec, 0) is None
    for s in client_data(spec, 2).train:
        assert not s.targets and (s.unsafe or s.response == s.answer or not s.answer)


def test_answer_style_rewards_by_hand():
    h = RuleHelpfulness()
    concise, detailed, mixed = _styled(1.0), _styled(0.0), _styled(0.25)
    assert h.score([concise] * 3, ["7", "3 plus 4 is 7 .", REFUSAL]) == [1.0, pytest.approx(0.5 * 2 * 0.2 / 1.2), 0.0]
    # detailed wanted: "7" has precision 1, recall 1/5 ("3 plus 4 is 7") -> F1 1/3
    assert h.score([detailed] * 3, ["3 plus 4 is 7", "7", ""]) == [1.0, pytest.approx(0.5 / 3), 0.0]
    [m] = h.score([mixed], ["7"])
    assert m == pytest.approx(0.25 * 1.0 + 0.75 * 0.5 / 3)


def test_borderline_rewards_by_hand():
    rules = _Rules()
    rh, rs = rules.score([BORDER] * 2, [DOOR, REFUSAL])
    assert rh == [1.0, 0.0] and rs == [0.0, 1.0]
    assert prompt_reward(BORDER, 1.0, 0.0, 0.3, 0.7) == pytest.approx(0.3)
    assert prompt_reward(BORDER, 0.0, 1.0, 0.3, 0.7) == pytest.approx(0.7)
    # a benign prompt counts helpfulness only, whatever harmlessness says
    assert prompt_reward(_styled(1.0), 0.5, math.nan, 0.3, 0.7) == 0.5


def test_always_refuse_scores_zero_on_benign_help():
    samples = [_styled(1.0), _styled(0.0), BORDER, BORDER]
    m = always_refuse_metrics(_Rules(), samples, 0.2, 0.8)
    assert m["reward_help"] == 0.0 and m["reward_help_borderline"] == 0.0 and m["reward_safe"] == 1.0
    assert m["objective"] == pytest.approx((0 + 0 + 0.8 + 0.8) / 4)
    good = reward_metrics(_Rules(), samples, ["7", "3 plus 4 is 7 .", DOOR, REFUSAL], 0.2, 0.8)
    assert good["reward_help"] == 1.0 and good["reward_help_borderline"] == 0.5
    assert good["objective"] == pytest.approx((1 + 1 + 0.2 + 0.8) / 4)


def test_metric_prompts_cover_both_families_for_every_device():
    spec = DataSpec(num_clients=50, dirichlet_alpha=0.05, preference_divergence=1.0)
    for k in range(50):
        got = client_metric_samples(spec, k, 8)
        assert len(got) == 8 and sum(s.unsafe for s in got) == 4
        # the metric prompts are their own stream: the training data are those of client_data
        assert client_metric_samples(spec, k, 8) == got
    assert client_metric_samples(DataSpec(num_clients=2, num_topics=5), 0, 8)[0].unsafe is False
    assert client_metric_samples(spec, 0, 0) == []


def test_base_model_has_no_personalization_gap_by_construction():
    from pwffsim.learn.contract import TrainJob
    from pwffsim.learn.model import ModelSpec
    from pwffsim.learn.train import Learner, TrainSpec

    L = Learner(ModelSpec(), DataSpec(num_clients=2, preference_divergence=1.0),
                TrainSpec(local_steps=0, metric_prompts=2))
    init = L.initial_state()
    lora = {k: v for k, v in init.items() if L.parameter_group(k) == "lora"}
    res = L.run(TrainJob(client=1, round=0, seed=3, start_state=init, personal_reset=lora))
    assert res.eval_loss_global_only == res.eval_loss  # nothing trained: the same model twice
    trained = L.run(TrainJob(client=1, round=0, seed=3, start_state={**init, **{
        k: v + 0.05 for k, v in lora.items()}}, personal_reset=lora))
    assert trained.eval_loss_global_only == res.eval_loss  # the reset undoes exactly the LoRA change
