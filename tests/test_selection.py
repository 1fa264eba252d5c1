"""Client selection: hand cases for every selector, edge cases, determinism, Oort exploration and
the straggler penalty."""
from __future__ import annotations

import numpy as np
import pytest

from pwffsim.sim.selection import (
    BatteryAwareSelector,
    ChannelAwareSelector,
    ClientSelector,
    OortSelector,
    SelectionContext,
    UniformSelector,
    make_selector,
)

ALL = ["uniform", "channel", "battery", "oort"]


def rng(seed=0):
    return np.random.default_rng(seed)


def hand_ctx() -> SelectionContext:
    return SelectionContext(
        round=3, t_s=120.0,
        expected_rate_bps={0: 1e6, 1: 5e6, 2: 3e6, 3: 5e6, 4: 2e6, 5: 0.5e6},
        battery_j={0: 10.0, 1: 50.0, 2: 19.9, 3: 20.0, 4: 90.0, 5: 5.0},
        battery_capacity_j={c: 100.0 for c in range(6)},
        num_samples={0: 100, 1: 50, 2: 200, 3: 10, 4: 100, 5: 80},
        last_loss={0: 1.0, 1: 2.0, 2: 0.5, 3: 3.0, 4: 0.8},  # 5 never trained
        last_duration_s={},
    )


# --------------------------------------------------------------------------------------------------
# uniform
# --------------------------------------------------------------------------------------------------
def test_uniform_sorted_distinct_and_roughly_uniform():
    sel = UniformSelector()
    counts = np.zeros(5)
    r = rng(1)
    for _ in range(2000):
        out = sel.select(r, [4, 2, 0, 3, 1], 2, hand_ctx())
        assert out == sorted(out) and len(set(out)) == 2 and set(out) <= {0, 1, 2, 3, 4}
        counts[out] += 1
    assert np.all(np.abs(counts / 2000 - 0.4) < 0.05)
    assert ClientSelector().name == "uniform" and isinstance(make_selector("uniform"), ClientSelector)


def test_uniform_ctx_optional():
    assert len(UniformSelector().select(rng(), range(6), 3)) == 3


# --------------------------------------------------------------------------------------------------
# channel
# --------------------------------------------------------------------------------------------------
def test_channel_picks_highest_rates_ties_by_id():
    sel = ChannelAwareSelector()
    ctx = hand_ctx()
    assert sel.select(rng(), range(6), 3, ctx) == [1, 2, 3]
    assert sel.select(rng(), range(6), 1, ctx) == [1]  # 1 and 3 tie at 5 Mbit/s: lower id
    assert sel.select(rng(), range(6), 4, ctx) == [1, 2, 3, 4]
    assert sel.select(rng(), [0, 5, 4], 2, ctx) == [0, 4]
    # a candidate without an expected rate counts as 0
    assert sel.select(rng(), [5, 9], 1, ctx) == [5]


# --------------------------------------------------------------------------------------------------
# battery
# --------------------------------------------------------------------------------------------------
def test_battery_skips_low_batteries():
    sel = BatteryAwareSelector()  # threshold 0.2 -> 20 J of 100 J
    ctx = hand_ctx()
    assert sel.eligible(range(6), ctx) == [1, 3, 4]  # 3 is exactly at the threshold: kept
    assert sel.select(rng(), range(6), 5, ctx) == [1, 3, 4]  # fewer than k left: all of them
    seen = set()
    for s in range(50):
        out = sel.select(rng(s), range(6), 2, ctx)
        assert len(out) == 2 and set(out) <= {1, 3, 4}
        seen |= set(out)
    assert seen == {1, 3, 4}
    # threshold 0.5: only 1 (50 J) and 4 (90 J); a client with no battery info is never skipped
    assert BatteryAwareSelector(0.5).select(rng(), [0, 1, 2, 4, 7], 6, ctx) == [1, 4, 7]
    assert make_selector("battery", threshold_fraction=0.95).select(rng(), range(6), 3, ctx) == []
    with pytest.raises(ValueError):
        BatteryAwareSelector(1.5)


# --------------------------------------------------------------------------------------------------
# oort
# --------------------------------------------------------------------------------------------------
def test_oort_hand_case():
    sel = OortSelector()
    ctx = hand_ctx()
    u = sel.utilities(range(6), ctx)
    # |B_i| * sqrt(loss^2): 100*1, 50*2, 200*0.5, 10*3, 100*0.8; 5 is unexplored
    assert u == pytest.approx({0: 100.0, 1: 100.0, 2: 100.0, 3: 30.0, 4: 80.0})
    # k=3, epsilon=0.1: 1 exploration slot (the only unexplored client, 5), 2 exploitation slots:
    # 0, 1, 2 tie at 100 -> lowest ids 0 and 1
    for s in range(10):
        assert sel.select(rng(s), range(6), 3, ctx) == [0, 1, 5]
    # k=5: 4 exploited (0, 1, 2, then 4 at 80) + 5
    assert sel.select(rng(), range(6), 5, ctx) == [0, 1, 2, 4, 5]
    # no unexplored candidate, epsilon=0: pure exploitation
    assert OortSelector(epsilon=0.0).select(rng(), range(5), 2, ctx) == [0, 1]


def test_oort_loss_sign_does_not_matter():
    ctx = SelectionContext(num_samples={0: 10, 1: 10}, last_loss={0: -3.0, 1: 2.0})
    assert OortSelector(epsilon=0.0).select(rng(), [0, 1], 1, ctx) == [0]


def test_oort_straggler_penalty_reorders():
    # client 0: fast (10 s), utility 100*1.0 = 100; client 1: slow (30 s), utility 100*1.5 = 150;
    # client 2: 10 s, utility 10. T = median(10, 30, 10) = 10 s, so client 1's utility becomes
    # 150 * (10/30)^2 = 16.7 < 100.
    ctx = SelectionContext(num_samples={0: 100, 1: 100, 2: 100},
                           last_loss={0: 1.0, 1: 1.5, 2: 0.1},
                           last_duration_s={0: 10.0, 1: 30.0, 2: 10.0})
    oort = OortSelector(epsilon=0.0)
    assert oort.utilities([0, 1, 2], ctx) == pytest.approx({0: 100.0, 1: 150.0 / 9.0, 2: 10.0})
    assert oort.select(rng(), [0, 1, 2], 1, ctx) == [0]
    # without the penalty (alpha=0, or a preferred duration the slow client meets) 1 wins
    assert OortSelector(epsilon=0.0, alpha=0.0).select(rng(), [0, 1, 2], 1, ctx) == [1]
    assert OortSelector(epsilon=0.0, preferred_duration_s=30.0).select(rng(), [0, 1, 2], 1, ctx) == [1]
    # alpha=1: 150 * 1/3 = 50 < 100 still reorders; a client without a known duration is not penalised
    assert OortSelector(epsilon=0.0, alpha=1.0).utilities([0, 1, 2], ctx)[1] == pytest.approx(50.0)
    ctx.last_duration_s.pop(1)
    assert oort.select(rng(), [0, 1, 2], 1, ctx) == [1]


def test_oort_exploration_only_unexplored():
    explored = list(range(6))
    ctx = SelectionContext(num_samples={c: 10 for c in range(10)},
                           last_loss={c: float(c + 1) for c in explored})  # utility rises with id
    sel = OortSelector(epsilon=0.4)  # k=5: floor(0.6*5)=3 exploited, 2 explored
    seen = set()
    for s in range(40):
        out = sel.select(rng(s), range(10), 5, ctx)
        assert len(out) == 5
        assert {3, 4, 5} <= set(out)  # the top-3 utilities
        explore = set(out) - {3, 4, 5}
        assert len(explore) == 2 and explore <= {6, 7, 8, 9}
        seen |= explore
    assert seen == {6, 7, 8, 9}
    # epsilon=0.1, k=3: at least one exploration slot when something is unexplored
    for s in range(10):
        out = OortSelector().select(rng(s), range(10), 3, ctx)
        assert set(out) & {6, 7, 8, 9} and len(set(out) & {6, 7, 8, 9}) == 1 and {4, 5} <= set(out)


def test_oort_no_unexplored_explores_the_rest():
    ctx = SelectionContext(num_samples={c: 10 for c in range(6)}, last_loss={c: float(c + 1) for c in range(6)})
    sel = OortSelector(epsilon=0.4)
    seen = set()
    for s in range(40):
        out = sel.select(rng(s), range(6), 5, ctx)
        assert len(out) == 5 and {3, 4, 5} <= set(out)
        seen |= set(out) - {3, 4, 5}
    assert seen == {0, 1, 2}


def test_oort_all_unexplored_and_too_few_unexplored():
    sel = OortSelector()
    out = sel.select(rng(), range(6), 3, SelectionContext())
    assert len(out) == 3
    # 2 unexplored and k=6 of 6: everything
    ctx = SelectionContext(last_loss={c: 1.0 for c in range(4)})
    assert sel.select(rng(), range(6), 6, ctx) == list(range(6))


# --------------------------------------------------------------------------------------------------
# common edge cases
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_k_larger_than_candidates(name):
    ctx = hand_ctx()
    sel = make_selector(name)
    out = sel.select(rng(), [4, 1, 3], 10, ctx)
    assert out == [1, 3, 4]  # all of them (battery: 1, 3, 4 are all above the threshold)


@pytest.mark.parametrize("name", ALL)
def test_empty_candidates_and_zero_k(name):
    sel = make_selector(name)
    assert sel.select(rng(), [], 3, hand_ctx()) == []
    assert sel.select(rng(), range(6), 0, hand_ctx()) == []
    with pytest.raises(ValueError):
        sel.select(rng(), range(6), -1, hand_ctx())


@pytest.mark.parametrize("name", ALL)
def test_deterministic_given_seed(name):
    ctx = SelectionContext(expected_rate_bps={c: 1e6 * (c % 7) for c in range(40)},
                           battery_j={c: float(c) for c in range(40)},
                           battery_capacity_j={c: 40.0 for c in range(40)},
                           num_samples={c: 10 + c for c in range(40)},
                           last_loss={c: 1.0 / (c + 1) for c in range(0, 40, 2)},
                           last_duration_s={c: 5.0 + c % 5 for c in range(0, 40, 2)})
    sel = make_selector(name)
    a = [sel.select(rng(7), range(40), 10, ctx) for _ in range(3)]
    b = sel.select(rng(7), list(reversed(range(40))), 10, ctx)  # candidate order does not matter
    assert a[0] == a[1] == a[2] == b
    assert a[0] == sorted(a[0]) and len(set(a[0])) == len(a[0])


def test_make_selector():
    assert [make_selector(n).name for n in ALL] == ALL
    assert isinstance(make_selector("channel"), ChannelAwareSelector)
    o = make_selector("oort", epsilon=0.2, alpha=1.0, preferred_duration_s=5.0)
    assert isinstance(o, OortSelector) and (o.epsilon, o.alpha, o.preferred_duration_s) == (0.2, 1.0, 5.0)
    with pytest.raises(ValueError, match="uniform, channel, battery, oort"):
        make_selector("greedy")
    with pytest.raises(ValueError):
        make_selector("channel", threshold_fraction=0.1)
    with pytest.raises(ValueError):
        OortSelector(epsilon=1.5)
    with pytest.raises(ValueError):
        OortSelector(preferred_duration_s=0.0)
