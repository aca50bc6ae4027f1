"""Paired differences (llm2llm/paired.py): the per-seed difference from two runs' wrong ids, and the
two-level bootstrap interval over seeds and examples."""

import pytest

from llm2llm.paired import SeedPair, bootstrap, seed_pair


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
