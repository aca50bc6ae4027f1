"""Paired differences (llm2llm/paired.py): the per-seed difference from two runs' wrong ids, and the
bootstrap interval over seeds, teacher draws and examples."""

import pytest

from llm2llm.paired import SeedDraws, SeedPair, bootstrap, seed_draws, seed_pair


def test_a_seed_pair_counts_only_the_examples_on_which_the_runs_differ():
    pair = seed_pair(3, ({"a", "b", "c"}, 10), ({"b", "d", "e", "f"}, 10))
    assert (pair.better, pair.worse, pair.n) == (3, 2, 10)  # d, e, f right only for the method; a, c the other way
    assert pair.difference == pytest.approx(0.1)
    with pytest.raises(ValueError, match="scored on 10 and 12 examples"):
        seed_pair(3, (set(), 10), (set(), 12))


def test_identical_runs_differ_by_exactly_nothing():
    result = bootstrap([SeedPair(s, 700, 0, 0) for s in range(5)])
    assert (result.mean, result.low, result.high, result.wins) == (0.0, 0.0, 0.0, 0)


def test_a_method_ahead_on_every_seed_has_an_interval_above_zero_around_its_mean():
    pairs = [SeedPair(s, 700, better, 10) for s, better in enumerate((40, 45, 50, 38, 47))]
    result = bootstrap(pairs)
    assert result.mean == pytest.approx(sum(p.difference for p in pairs) / 5)
    assert 0 < result.low < result.mean < result.high and result.wins == 5
    assert bootstrap(pairs).low == result.low  # a fixed RNG seed: the same table every time


def test_the_interval_carries_the_spread_between_seeds():
    """Same mean, one case with all seeds alike and one with seeds far apart: the latter is wider and
    reaches below zero, as three seeds of ±13 points should."""
    alike = bootstrap([SeedPair(s, 200, 16, 10) for s in range(3)])
    spread = bootstrap([SeedPair(0, 200, 60, 10), SeedPair(1, 200, 10, 40), SeedPair(2, 200, 8, 10)])
    assert alike.mean == pytest.approx(spread.mean)
    assert spread.high - spread.low > 3 * (alike.high - alike.low) and spread.low < 0 < spread.high
    assert spread.wins == 1 and [round(100 * p.difference, 1) for p in spread.seeds] == [25.0, -15.0, -1.0]


def ids(prefix: str, count: int) -> set[str]:
    return {f"{prefix}{i}" for i in range(count)}


def test_one_teacher_draw_a_side_is_the_two_level_bootstrap_unchanged():
    method, reference = (ids("m", 80), 700), (ids("r", 100), 700)
    assert seed_draws(0, [method], [reference]) == seed_pair(0, method, reference)
    with pytest.raises(ValueError, match="scored on 10 and 12 examples"):
        seed_draws(3, [(set(), 10), (set(), 12)], [(set(), 10)])


def test_teacher_draws_pool_to_their_mean_and_widen_the_interval_by_their_spread():
    """Two draws of the method per seed against one of the reference: the seed's difference is the draws'
    mean accuracy minus the reference's. Draws that agree give the interval of a single draw (the
    examples' noise only); draws 80 examples apart, with the same mean, give a wider one."""
    reference = [(ids("r", 100), 700)]
    agree = [seed_draws(s, [(ids("m", 80), 700)] * 2, reference) for s in range(5)]
    apart = [seed_draws(s, [(ids("m", 40), 700), (ids("m", 120), 700)], reference) for s in range(5)]
    single = bootstrap([seed_pair(s, (ids("m", 80), 700), reference[0]) for s in range(5)])
    assert isinstance(agree[0], SeedDraws) and agree[0].draws == (2, 1)
    assert agree[0].difference == apart[0].difference == pytest.approx(20 / 700)
    together, spread = bootstrap(agree), bootstrap(apart)
    assert together.mean == spread.mean == pytest.approx(single.mean)
    assert abs(together.low - single.low) < 0.004 and abs(together.high - single.high) < 0.004
    assert spread.high - spread.low > 1.5 * (single.high - single.low)
    same = bootstrap([seed_draws(s, reference * 2, reference * 3) for s in range(3)])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
