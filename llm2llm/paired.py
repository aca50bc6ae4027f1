"""Paired differences between two methods run on the same RNG seeds and scored on the same examples.

Two runs with the same data seed share their seed examples and their test (and validation) sample,
so their answers can be compared example by example. For one seed, the difference in accuracy is
(better - worse) / n: `better` examples the method answers right and the reference wrong, `worse`
the other way round; the examples both get right or both get wrong cancel. Over seeds, the mean
difference gets a 95 % interval from a two-level bootstrap (Davison & Hinkley 1997, sec. 3.8): each
draw resamples the seeds with replacement, then the examples within each drawn seed (a multinomial
over better / worse / same), so the interval carries both sources of noise: which seed examples a
run was given (large here: ±13 points between seeds) and which test examples it was scored on.
With 5 seeds the seed level is coarse, so the table also gives every seed's own difference and the
number of seeds a method wins.

Everything is read from the run directories: iter_NNN/scores.json lists each split's wrong ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm2llm.store import read_json

DRAWS = 10_000


@dataclass(frozen=True)
class SeedPair:
    """One seed's comparison on one split: n examples, `better` right only for the method, `worse`
    right only for the reference."""

    seed: int
    n: int
    better: int
    worse: int

    @property
    def difference(self) -> float:
        return (self.better - self.worse) / self.n if self.n else 0.0


@dataclass(frozen=True)
class Paired:
    seeds: list[SeedPair]
    mean: float  # mean over seeds of the per-seed difference (fractions)
    low: float  # 95 % bootstrap interval of the mean
    high: float

    @property
    def wins(self) -> int:
        return sum(p.difference > 0 for p in self.seeds)


def wrong_ids(run: Path, iteration: int, split: str) -> tuple[set[str], int] | None:
    """The ids a run's iteration got wrong on a split, and the split's size; None where not scored."""
    path = Path(run) / f"iter_{iteration:03d}" / "scores.json"
    if not path.exists():
        return None
    scores = read_json(path)
    if split not in scores:
        return None
    return set(scores[split]["wrong_ids"]), scores[split]["total"]


def evaluation_ids(run: Path, split: str) -> list[str] | None:
    """The fixed evaluation sample of a split (None: the whole split)."""
    path = Path(run) / f"{split}_ids.json"
    return read_json(path) if path.exists() else None


def seed_pair(seed: int, method: tuple[set[str], int], reference: tuple[set[str], int]) -> SeedPair:
    (wrong_m, n_m), (wrong_r, n_r) = method, reference
    if n_m != n_r:
        raise ValueError(f"seed {seed}: the runs were scored on {n_m} and {n_r} examples; pair runs on one sample")
    return SeedPair(seed, n_m, better=len(wrong_r - wrong_m), worse=len(wrong_m - wrong_r))


def bootstrap(pairs: list[SeedPair], draws: int = DRAWS, rng_seed: int = 0) -> Paired:
    """The mean per-seed difference and its 95 % two-level bootstrap interval (seeds, then examples)."""
    rng = np.random.default_rng(rng_seed)
    k = len(pairs)
    means = np.zeros(draws)
    for position in range(k):  # each position of a bootstrap sample of seeds draws a seed, then its examples
        chosen = rng.integers(0, k, size=draws)
        for index, pair in enumerate(pairs):
            rows = np.flatnonzero(chosen == index)
            if not rows.size or not pair.n:
                continue
            same = pair.n - pair.better - pair.worse
            counts = rng.multinomial(pair.n, [pair.better / pair.n, pair.worse / pair.n, same / pair.n], rows.size)
            means[rows] += (counts[:, 0] - counts[:, 1]) / pair.n
    means /= max(k, 1)
    mean = float(np.mean([p.difference for p in pairs])) if pairs else 0.0
    low, high = np.percentile(means, [2.5, 97.5]) if pairs else (0.0, 0.0)
    return Paired(pairs, mean, float(low), float(high))
