"""Filters for teacher-written examples, each decision with its reason:
unparsable -> invalid (task check) -> duplicate (exact, normalised) -> near_duplicate (ROUGE-L
F1 above the threshold against the training set, as the official code) -> test_overlap.

ROUGE-L here is rouge_score's (lower-cased alphanumeric tokens, no stemming), computed as the LCS
of token sequences by rapidfuzz: each distinct token is mapped to one character so the C++ LCS
runs on short strings.
"""

from __future__ import annotations

import re

from rapidfuzz import process
from rapidfuzz.distance import LCSseq

TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def normalise(text: str) -> str:
    return " ".join(rouge_tokens(text))


class RougeIndex:
    """Max ROUGE-L F1 of a query against a pool of texts."""

    def __init__(self, texts: list[str] = ()):
        self.vocab: dict[str, str] = {}
        self.pool: list[str] = []
        self.add(texts)

    def _encode(self, text: str) -> str:
        return "".join(self.vocab.setdefault(t, chr(0x100 + len(self.vocab))) for t in rouge_tokens(text))

    def add(self, texts) -> None:
        self.pool.extend(self._encode(t) for t in texts)

    def max_f1(self, text: str) -> float:
        query = self._encode(text)
        if not query or not self.pool:
            return 0.0
        best = 0.0
        # LCS bounded by the shorter length; F1 = 2*lcs/(len_q+len_p).
        for lcs, length in zip(process.cdist([query], self.pool, scorer=LCSseq.similarity, workers=1)[0],
                               map(len, self.pool)):
            if lcs:
                best = max(best, 2 * lcs / (len(query) + length))
        return best


def filter_examples(candidates: list[dict], task, train_texts: list[str], test_texts: list[str], threshold: float) -> list[dict]:
    """candidates: [{key, example | None}] in a fixed order. Returns one decision per candidate:
    {key, kept, reason, example}. Kept examples join the pool, so two near-identical candidates
    do not both get in."""
    seen = {normalise(t) for t in train_texts}
    test_seen = {normalise(t) for t in test_texts}
    pool, test_pool = RougeIndex(train_texts), RougeIndex(test_texts)
    decisions = []
    for candidate in candidates:
        example, reason = candidate["example"], None
        if example is None:
            reason = "unparsable"
        else:
            problem = task.generated_problem({"id": candidate["key"], **example})
            text = task.key_text(example) if problem is None else ""
            if problem is not None:
                reason = "invalid"
            elif normalise(text) in seen:
                reason = "duplicate"
            elif normalise(text) in test_seen or test_pool.max_f1(text) > threshold:
                reason = "test_overlap"
            elif pool.max_f1(text) > threshold:
                reason = "near_duplicate"
            if reason is None:
                seen.add(normalise(text))
                pool.add([text])
        decisions.append({"key": candidate["key"], "kept": reason is None, "reason": reason or "kept",
                          "detail": problem if reason == "invalid" else None, "example": example})
    return decisions
