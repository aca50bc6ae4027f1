"""Which iteration's student a run hands over: the one with the best validation accuracy.

The test split is scored every iteration but never used to choose: choosing by test accuracy would
leak the test set into the reported result. A tie goes to the earliest iteration (the smaller
training set, fewer teacher tokens). A run without a validation split hands over its last iteration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BY_VALIDATION = "the best validation accuracy"
BY_LAST = "the last iteration (no validation split)"


@dataclass(frozen=True)
class Selection:
    iteration: int
    rule: str  # BY_VALIDATION or BY_LAST


def select_iteration(validation_accuracy: Mapping[int, float | None]) -> Selection | None:
    """The selected iteration among those scored so far ({iteration: validation accuracy or None});
    None when nothing is scored yet."""
    if not validation_accuracy:
        return None
    scored = {it: acc for it, acc in validation_accuracy.items() if acc is not None}
    if not scored:
        return Selection(max(validation_accuracy), BY_LAST)
    best = max(scored.values())
    return Selection(min(it for it, acc in scored.items() if acc == best), BY_VALIDATION)


def split_accuracy(scores: dict, split: str) -> float | None:
    """A split's accuracy in an iteration's scores.json; None when the split was not scored."""
    if split not in scores:
        return None
    return scores[split]["correct"] / scores[split]["total"] if scores[split]["total"] else 0.0
