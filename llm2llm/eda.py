"""EDA (Wei & Zou, 2019): synonym replacement, random insertion, random swap and random deletion,
as in the paper's reference code (jasonwei20/eda_nlp), with WordNet 3.0 read offline by NLTK.

Differences from the reference code, for reproducibility only: every random choice comes from
one `random.Random` per example (seeded by the run seed and the example id), and sets are sorted
before sampling, so the output does not depend on PYTHONHASHSEED or on the order of the seed.

WordNet: the Debian packages wordnet-base + wordnet-sense-index install the database files in
/usr/share/wordnet; NLTK's reader wants them in an nltk_data tree with a `lexnames` file, and it
refuses paths outside nltk.data.path (also through symlinks), so they are copied once into the
model store (models/nltk_data/corpora/wordnet) with the standard lexnames written beside them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from llm2llm.errors import UserError

SYSTEM_WORDNET = Path("/usr/share/wordnet")
WORDNET_FILES = (
    [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")]
    + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
    + ["index.sense"]
)
# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# The stop words the EDA reference code never replaces (its list, NLTK's English list of 2018).
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this that these those am
is are was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in out on off
over under again further then once here there when where why how all any both each few more most other some such no
nor not only own same so than too very s t can will just don should now""".split()
) | {""}


def wordnet_source(configured: str | None = None) -> Path:
    return Path(configured or os.environ.get("LLM2LLM_WORDNET_DIR") or SYSTEM_WORDNET)


def _nltk_tree() -> Path:
    from llm2llm.models import model_store

    return (model_store() / "nltk_data").resolve()


def wordnet_check(configured: str | None = None) -> None:
    """Raise a one-line error if WordNet is neither installed for NLTK yet nor available to copy."""
    if (_nltk_tree() / "corpora" / "wordnet" / "lexnames").is_file():
        return
    source = wordnet_source(configured)
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise UserError(
            f"WordNet 3.0 not found in {source} (missing "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); "
            "install it with `apt-get install wordnet-base wordnet-sense-index`, or set baselines.wordnet_dir / "
            "LLM2LLM_WORDNET_DIR to a folder holding WordNet 3.0's database files"
        )


def _install_nltk_tree(source: Path, nltk_data: Path) -> None:
    wordnet_check(str(source))
    target = nltk_data / "corpora" / "wordnet"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    for name in WORDNET_FILES:
        shutil.copyfile(source / name, staging / name)
    if (source / "lexnames").is_file():
        shutil.copyfile(source / "lexnames", staging / "lexnames")
    else:
        (staging / "lexnames").write_text(
            "".join(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
        )
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)


@lru_cache(maxsize=2)
def load_wordnet(configured: str | None = None):
    """NLTK's WordNet reader over the local WordNet 3.0 files (copied once into the model store)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    nltk_data = _nltk_tree()
    if not (nltk_data / "corpora" / "wordnet" / "lexnames").is_file():
        _install_nltk_tree(wordnet_source(configured), nltk_data)
    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
        return WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)


def clean(line: str) -> str:
    """The reference code's get_only_chars: lower-case letters and single spaces."""
    line = line.replace("’", "").replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ").lower()
    return re.sub(" +", " ", "".join(c if "a" <= c <= "z" or c == " " else " " for c in line)).strip()


class EDA:
    def __init__(self, wordnet, alpha: float = 0.1, num_aug: int = 9):
        self.wordnet, self.alpha, self.num_aug = wordnet, alpha, num_aug
        self._synonyms: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        if word not in self._synonyms:
            found = {
                clean(lemma.name().replace("_", " "))
                for synset in self.wordnet.synsets(word)
                for lemma in synset.lemmas()
            }
            self._synonyms[word] = sorted(found - {word, ""})
        return self._synonyms[word]

    def synonym_replacement(self, words: list[str], n: int, rng: random.Random) -> list[str]:
        new_words = list(words)
        candidates = sorted({w for w in words if w not in STOP_WORDS})
        rng.shuffle(candidates)
        replaced = 0
        for word in candidates:
            synonyms = self.synonyms(word)
            if synonyms:
                synonym = rng.choice(synonyms)
                new_words = [synonym if w == word else w for w in new_words]
                replaced += 1
            if replaced >= n:
                break
        return " ".join(new_words).split(" ")

    def random_insertion(self, words: list[str], n: int, rng: random.Random) -> list[str]:
        new_words = list(words)
        for _ in range(n):
            for _attempt in range(10):
                synonyms = self.synonyms(new_words[rng.randint(0, len(new_words) - 1)])
                if synonyms:
                    new_words.insert(rng.randint(0, len(new_words) - 1), synonyms[0])
                    break
        return new_words

    @staticmethod
    def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
        new_words = list(words)
        for _ in range(n):
            i = j = rng.randint(0, len(new_words) - 1)
            for _attempt in range(4):
                j = rng.randint(0, len(new_words) - 1)
                if j != i:
                    break
            new_words[i], new_words[j] = new_words[j], new_words[i]
        return new_words

    @staticmethod
    def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
        if len(words) == 1:
            return list(words)
        kept = [w for w in words if rng.uniform(0, 1) > p]
        return kept or [words[rng.randint(0, len(words) - 1)]]

    def augment(self, sentence: str, rng: random.Random) -> list[str]:
        """num_aug augmented sentences (the original is not among them)."""
        words = [w for w in clean(sentence).split(" ") if w]
        if not words:
            return []
        n = max(1, int(self.alpha * len(words)))
        per_operation = self.num_aug // 4 + 1
        out = [" ".join(self.synonym_replacement(words, n, rng)) for _ in range(per_operation)]
        out += [" ".join(self.random_insertion(words, n, rng)) for _ in range(per_operation)]
        out += [" ".join(self.random_swap(words, n, rng)) for _ in range(per_operation)]
        out += [" ".join(self.random_deletion(words, self.alpha, rng)) for _ in range(per_operation)]
        out = [clean(s) for s in out]
        rng.shuffle(out)
        return out[: self.num_aug]
