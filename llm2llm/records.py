"""The records a run writes, as types: one per file of docs/run-directory.md (tests/test_docs.py checks
that the two agree, tests/test_loop.py that a real run's files fit them).

An Example's own fields depend on its task type (classification: text, label; numeric: question,
answer; multiple choice: context, choices, label); the rest is what the loop adds. JSON lines files
hold one record per line; scores.json holds one SplitScores per split.
"""

from typing import Any, Optional

# typing_extensions (pydantic's dependency): NotRequired on Python 3.10; no `from __future__ import
# annotations` here, which would hide NotRequired from __required_keys__.
from typing_extensions import NotRequired, TypedDict


class Example(TypedDict):
    """A training, seed, test or validation example (its task's fields beside these)."""

    id: str
    parent_id: NotRequired[str]  # a new example: the seed example it was written for
    iteration: NotRequired[int]  # ... the iteration whose generate step wrote it
    teacher: NotRequired[str]  # ... the teacher's name and fingerprint (EDA's edits have none)
    teacher_fingerprint: NotRequired[str]


class Prediction(TypedDict):
    """iter_NNN/predictions.jsonl: one answer of the student."""

    key: str  # "<split>/<id>[/<sample>]", or "confidence/<id>" (a log-probability)
    split: str
    id: str
    sample: NotRequired[int]
    target: NotRequired[str]  # a confidence request: the answer whose log-probability is the output
    prompt: str
    output: str
    finish_reason: Optional[str]


class TeacherOutput(TypedDict):
    """iter_NNN/teacher_outputs.jsonl: one answer of the teacher."""

    key: str
    parent_id: str
    sample: int
    draw: int
    asked: int  # how many new examples the request asked for
    prompt: str
    output: str
    finish_reason: Optional[str]
    teacher: str
    teacher_fingerprint: str


class LabelCheck(TypedDict):
    answer: Optional[str]  # the teacher's answer to the new example, asked as the student is
    agrees: bool


class Candidate(TypedDict):
    """iter_NNN/candidates.jsonl (the generate phase's marker): one parsed new example, or None."""

    key: str
    example: Optional[Example]
    truncated: NotRequired[bool]
    label_check: NotRequired[LabelCheck]


class Decision(TypedDict):
    """iter_NNN/filter_decisions.jsonl: what the filter made of one candidate."""

    key: str
    kept: bool
    reason: str  # "kept", or why not: unparsable, truncated, invalid, label_mismatch, duplicate, ...
    detail: Optional[str]
    example: Optional[Example]


class SplitScores(TypedDict):
    """iter_NNN/scores.json, per split (test, validation, seed)."""

    total: int
    correct: int
    invalid: int
    wrong_ids: list[str]
    confusion: NotRequired[dict[str, dict[str, int]]]  # classification, one answer each: gold -> answer -> count
    samples: NotRequired[int]  # the seed split sampled (seed_eval.samples > 1)
    sampled_answers: NotRequired[int]
    sampled_correct: NotRequired[int]
    confidence: NotRequired[dict[str, float]]  # seed_eval.rank_by confidence: log-probability of the right answer


Scores = dict[str, SplitScores]

# A run directory's per-iteration JSON lines files and the record each line holds.
FILES: dict[str, type] = {
    "predictions.jsonl": Prediction,
    "teacher_outputs.jsonl": TeacherOutput,
    "candidates.jsonl": Candidate,
    "filter_decisions.jsonl": Decision,
}


def fields(kind: type) -> tuple[set[str], set[str]]:
    """A record type's required and optional keys."""
    return set(kind.__required_keys__), set(kind.__optional_keys__)


def problems(record: dict[str, Any], kind: type) -> list[str]:
    """What keeps `record` from being a `kind`: a required key missing, a key the type does not name.
    (An Example may carry its task's own fields: checked by the task, not here.)"""
    required, optional = fields(kind)
    found = [f"{kind.__name__}: no {key!r}" for key in sorted(required - set(record))]
    if kind is not Example:
        found += [f"{kind.__name__}: unknown key {key!r}" for key in sorted(set(record) - required - optional)]
    if kind in (Candidate, Decision) and isinstance(record.get("example"), dict):
        found += problems(record["example"], Example)
    return found
