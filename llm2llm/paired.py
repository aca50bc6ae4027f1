"""Paired differences between two methods run on the same RNG seeds and scored on the same examples.

Two runs with the same data seed share their seed examples and their test (and validation) sample,
so their answers can be compared example by example. For one seed, the difference in accuracy is
(better - worse) / n: `better` examples the method answers right and the reference wrong, `worse`
the other way round; the examples both get right or both get wrong cancel. Over seeds, the mean
difference gets a 95 % interval from a two-level bootstrap (Davison & Hinkley 1997, sec. 3.8): each
replicate resamples the seeds with replacement, then the examples within each picked seed (a multinomial
over better / worse / same), so the interval carries both sources of noise: which seed examples a
run was given (large here: ±13 points between seeds) and which test examples it was scored on.
With 5 seeds the seed level is coarse, so the table also gives every seed's own difference and the
number of seeds a method wins.

A third source of noise is the teacher's sampling: runs of one data seed that differ only in
teacher.sampling.seed are draws of the same comparison, and on SNIPS-14 the draws alone move a run by
3 points. Where a seed has several draws on either side, its difference is the mean accuracy over the
method's draws minus the mean over the reference's, and the bootstrap resamples three levels: the
seeds, then each picked seed's teacher draws (each side's with replacement), then its examples. With one draw
on each side this is the two-level bootstrap above, replicate for replicate (the same random numbers).

Everything is read from the run directories: iter_NNN/scores.json lists each split's wrong ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm2llm.store import read_json

REPLICATES = 10_000


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

    @property
    def draws(self) -> tuple[int, int]:
        return 1, 1


@dataclass(frozen=True)
class SeedDraws:
    """One seed's comparison where a side has several teacher draws: a row of `method` / `reference` per
    draw, a column per example that some draw got wrong (1 = wrong). The other examples every draw got
    right count in n and cancel in every difference, so they need no column."""

    seed: int
    n: int
    method: np.ndarray
    reference: np.ndarray

    @property
    def difference(self) -> float:
        return float(self.reference.sum(axis=1).mean() - self.method.sum(axis=1).mean()) / self.n if self.n else 0.0

    @property
    def draws(self) -> tuple[int, int]:
        return len(self.method), len(self.reference)


@dataclass(frozen=True)
class Paired:
    seeds: list[SeedPair | SeedDraws]
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


def seed_draws(seed: int, method: list[tuple[set[str], int]], reference: list[tuple[set[str], int]]):
    """One seed's comparison from each side's draws (wrong ids, split size): a SeedPair where each side
    has one draw, else a SeedDraws."""
    sizes = sorted({n for _, n in method + reference})
    if len(sizes) > 1:
        raise ValueError(
            f"seed {seed}: the runs were scored on {' and '.join(map(str, sizes))} examples; pair runs on one sample"
        )
    if len(method) == len(reference) == 1:
        return seed_pair(seed, method[0], reference[0])
    wrong_somewhere = sorted(set().union(*(wrong for wrong, _ in method + reference)))
    columns = {example: column for column, example in enumerate(wrong_somewhere)}

    def matrix(side: list[tuple[set[str], int]]) -> np.ndarray:
        rows = np.zeros((len(side), len(columns)))
        for row, (wrong, _) in enumerate(side):
            rows[row, [columns[example] for example in wrong]] = 1
        return rows

    return SeedDraws(seed, sizes[0], matrix(method), matrix(reference))


def resample(rng: np.random.Generator, pair: SeedPair | SeedDraws, size: int) -> np.ndarray:
    """`size` bootstrap replicates of one seed's difference."""
    if isinstance(pair, SeedPair):  # one draw a side: the examples, as a multinomial over better / worse / same
        same = pair.n - pair.better - pair.worse
        counts = rng.multinomial(pair.n, [pair.better / pair.n, pair.worse / pair.n, same / pair.n], size)
        return (counts[:, 0] - counts[:, 1]) / pair.n
    (a, b), columns = pair.draws, pair.method.shape[1]
    # each side's draws with replacement: the share of the drawn draws that got each example wrong
    method = rng.multinomial(a, [1 / a] * a, size) @ pair.method / a
    reference = rng.multinomial(b, [1 / b] * b, size) @ pair.reference / b
    # then the n examples: a weight per column, the last category the examples every draw got right
    weights = rng.multinomial(pair.n, [1 / pair.n] * columns + [(pair.n - columns) / pair.n], size)[:, :columns]
    return (weights * (reference - method)).sum(axis=1) / pair.n


def bootstrap(pairs: list[SeedPair | SeedDraws], replicates: int = REPLICATES, rng_seed: int = 0) -> Paired:
    """The mean per-seed difference and its 95 % bootstrap interval (seeds, then draws where a seed has
    several, then examples)."""
    rng = np.random.default_rng(rng_seed)
    k = len(pairs)
    means = np.zeros(replicates)
    for position in range(k):  # each position of a bootstrap sample of seeds picks a seed, then its draws and examples
        chosen = rng.integers(0, k, size=replicates)
        for index, pair in enumerate(pairs):
            rows = np.flatnonzero(chosen == index)
            if not rows.size or not pair.n:
                continue
            means[rows] += resample(rng, pair, rows.size)
    means /= max(k, 1)
    mean = float(np.mean([p.difference for p in pairs])) if pairs else 0.0
    low, high = np.percentile(means, [2.5, 97.5]) if pairs else (0.0, 0.0)
    return Paired(pairs, mean, float(low), float(high))
