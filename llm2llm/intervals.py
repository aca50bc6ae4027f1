"""95 % confidence intervals for an accuracy measured on n examples.

The Wilson score interval (Wilson 1927; Agresti & Coull 1998 recommend it over the normal
approximation, which collapses at 0 % and 100 % and is too narrow for small n). It is three lines of
arithmetic; the libraries that ship it (statsmodels, scipy) would add ~60 MB of wheels to an
air-gapped install for them.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the accuracy correct/total, as fractions; (0, 1) when nothing was scored."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # at 0 % and 100 % the bound is exactly 0 or 1 (floating point lands a hair inside)
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == total else centre + half)
