"""Filters for teacher-written examples, each decision with its reason:
unparsable -> truncated (the last example of an answer cut by the token limit) -> invalid (task
check) -> label_mismatch (teacher.label_check: the teacher's own answer to it is not its intended
one) -> duplicate (exact, normalised, of the training set or a kept one) -> test_overlap (exact
or ROUGE-L against the test split) -> near_duplicate (ROUGE-L F1 above the threshold against the
training set, as the official code).

ROUGE-L here is rouge_score's (lower-cased alphanumeric tokens, no stemming; F1 computed with its
float formula, so a score at the threshold falls on the same side). The LCS of token sequences is
rapidfuzz's C++ bit-parallel one: each distinct token is mapped to one character, and a block of
candidates is scored against the whole pool in one multi-threaded `cdist` call. Candidates are
still decided in order (a kept one joins the pool), within a block through the block's own
candidate x candidate matrix. bench/dedup.py checks the decisions against the official approach.
"""

from __future__ import annotations

import re

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from llm2llm.records import Candidate, Decision

TOKEN = re.compile(r"[a-z0-9]+")
BLOCK = 512  # candidates scored per cdist call: bounds memory at BLOCK x pool scores


def rouge_tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def normalise(text: str) -> str:
    return " ".join(rouge_tokens(text))


def rouge_f1(lcs: np.ndarray, query_lengths: np.ndarray, pool_lengths: np.ndarray) -> np.ndarray:
    """rouge_score's _score_lcs F1 for an LCS matrix (queries x pool): precision over the pool
    item, recall over the query, 2pr/(p+r), 0 where the LCS is 0."""
    lcs = lcs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / pool_lengths[None, :]
        recall = lcs / query_lengths[:, None]
        f1 = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, f1, 0.0)


class RougeIndex:
    """Max ROUGE-L F1 of queries against a growing pool of texts."""

    def __init__(self, texts: list[str] = ()):
        self.vocab: dict[str, str] = {}
        self.pool: list[str] = []
        self.lengths = np.zeros(0, dtype=np.float64)
        self.add(texts)

    def encode(self, text: str) -> str:
        return "".join(self.vocab.setdefault(t, chr(0x100 + len(self.vocab))) for t in rouge_tokens(text))

    def add(self, texts) -> None:
        encoded = [self.encode(t) for t in texts]
        self.pool.extend(encoded)
        self.lengths = np.concatenate([self.lengths, np.array([len(e) for e in encoded], dtype=np.float64)])

    def f1_matrix(self, queries: list[str], pool: list[str] | None = None) -> np.ndarray:
        """F1 of each encoded query against each encoded pool item (this index's pool by default)."""
        pool = self.pool if pool is None else pool
        if not queries or not pool:
            return np.zeros((len(queries), len(pool)))
        lcs = process.cdist(queries, pool, scorer=LCSseq.similarity, workers=-1, dtype=np.int32)
        pool_lengths = self.lengths if pool is self.pool else np.array([len(p) for p in pool], dtype=np.float64)
        return rouge_f1(lcs, np.array([len(q) for q in queries], dtype=np.float64), pool_lengths)

    def max_f1_encoded(self, queries: list[str]) -> np.ndarray:
        best = np.zeros(len(queries))
        for start in range(0, len(queries), BLOCK):
            block = self.f1_matrix(queries[start : start + BLOCK])
            if block.size:
                best[start : start + BLOCK] = block.max(axis=1)
        return best

    def max_f1(self, text: str) -> float:
        return float(self.max_f1_encoded([self.encode(text)])[0])


def ordered_decisions(
    texts: list[str], pool_texts: list[str], threshold: float, eligible: list[bool]
) -> tuple[list[str | None], list[float | None]]:
    """For each eligible text, in order: "duplicate" (normalised copy of an earlier kept text),
    "near_duplicate" (ROUGE-L F1 above the threshold against the pool or an earlier kept text) or
    None (kept: it joins the pool); and for a near-duplicate its ROUGE-L F1. The same decisions as
    scoring each text against the growing pool one by one, computed a block of texts at a time."""
    index = RougeIndex(pool_texts)
    kept_texts: set[str] = set()
    reasons: list[str | None] = [None] * len(texts)
    scores: list[float | None] = [None] * len(texts)
    for start in range(0, len(texts), BLOCK):
        ids = [i for i in range(start, min(start + BLOCK, len(texts))) if eligible[i]]
        encoded = [index.encode(texts[i]) for i in ids]
        against_pool = index.f1_matrix(encoded).max(axis=1, initial=0.0)
        within = index.f1_matrix(encoded, encoded)
        kept: list[int] = []  # positions in this block that joined the pool
        for j, i in enumerate(ids):
            if normalise(texts[i]) in kept_texts:
                reasons[i] = "duplicate"
            elif against_pool[j] > threshold or (kept and within[j, kept].max() > threshold):
                reasons[i] = "near_duplicate"
                scores[i] = float(max(against_pool[j], within[j, kept].max() if kept else 0.0))
            else:
                kept.append(j)
                kept_texts.add(normalise(texts[i]))
        index.pool.extend(encoded[j] for j in kept)
        index.lengths = np.concatenate([index.lengths, np.array([len(encoded[j]) for j in kept], dtype=np.float64)])
    return reasons, scores


def filter_examples(
    candidates: list[Candidate], task, train_texts: list[str], test_texts: list[str], threshold: float
) -> list[Decision]:
    """candidates: [{key, example | None}] in a fixed order. Returns one decision per candidate:
    {key, kept, reason, example}. Kept examples join the pool, so two near-identical candidates
    do not both get in."""
    seen = {normalise(t) for t in train_texts}
    test_seen = {normalise(t) for t in test_texts}
    reasons, details, texts = [], [], []
    for candidate in candidates:
        example, reason, problem, text = candidate["example"], None, None, ""
        if example is None:
            reason = "unparsable"
        elif candidate.get("truncated"):
            reason, problem = (
                "truncated",
                "the teacher's answer hit the token limit (finish reason length) inside this example",
            )
        else:
            problem = task.generated_problem({"id": candidate["key"], **example})
            check = candidate.get("label_check")
            if problem is not None:
                reason = "invalid"
            elif check is not None and not check["agrees"]:
                reason, problem = "label_mismatch", f"the teacher answers it with {check['answer']!r}"
            else:
                text = task.key_text(example)
                reason = "duplicate" if normalise(text) in seen else None
        reasons.append(reason)
        details.append(problem)
        texts.append(text)
    # The test set does not grow: one vectorised pass. Then the growing training pool, in order.
    test_index = RougeIndex(test_texts)
    test_scores = test_index.max_f1_encoded(
        [test_index.encode(t) if r is None else "" for t, r in zip(texts, reasons)]
    )
    for i, text in enumerate(texts):
        if reasons[i] is None and (normalise(text) in test_seen or test_scores[i] > threshold):
            reasons[i] = "test_overlap"
            details[i] = f"ROUGE-L {float(test_scores[i]):.2f} against the test and validation splits"
    pool_reasons, pool_scores = ordered_decisions(texts, train_texts, threshold, [r is None for r in reasons])
    for i, (reason, score) in enumerate(zip(pool_reasons, pool_scores)):
        if reasons[i] is None:
            reasons[i] = reason
            if score is not None:
                details[i] = f"ROUGE-L {score:.2f} against the training set and the examples kept before it"
    return [
        {
            "key": c["key"],
            "kept": r is None,
            "reason": r or "kept",
            "detail": d if r else None,
            "example": c["example"],
        }
        for c, r, d in zip(candidates, reasons, details)
    ]
