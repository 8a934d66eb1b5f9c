"""A synthetic source -> target language pair with gold word alignments.

The two languages share nothing but meaning: every word has an invented source form and
an invented target form, and the target grammar reorders, splits, merges and drops words
so that the alignment is far from the diagonal. Because sentences are generated from a
grammar, the gold alignment is known exactly.

Rules (source order first, target order second):

* adjective-noun swap: ``det adj1 adj2 noun`` -> ``det noun adj2 adj1``;
* verb-final clauses: ``subj [adv] verb [obj] [pp]`` -> ``subj [pp] [obj] [adv] verb``;
* one-to-two: compound verbs become an auxiliary in second position plus a final
  participle, both linked to the source verb;
* two-to-one: preposition + definite article contract into one target word, linked to
  both source words;
* dropped words: emphatic and sentence-final particles have no target word (no link);
* two clauses may be joined by a conjunction; each clause is reordered on its own.

The lexicon is fixed (generated once from :data:`LEXICON_SEED`); sentences are
deterministic functions of the generator's seed. Split convention: a stable hash of the
source sentence puts it in exactly one of ``"train"``, ``"dev"`` or ``"test"``, so a
held-out sentence never occurs in training data whatever seeds are used; by convention
held-out sets are drawn with :data:`SPLIT_SEEDS`.

Alignments are 0-indexed ``(source_index, target_index)`` pairs in Python objects and
1-indexed ``i-j`` (talp, sure links) in files, read and written with
:mod:`groundroll.alignment.io`.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Iterator

from groundroll.alignment.io import read_talp, write_talp
from groundroll.data import toy_translation_hard
from groundroll.data._toy_grammar import (LEXICON_SEED, MIN_WORDS, Lexicon, Pair, _clause,
                                          _sentence, _Src, _Tgt, lexicon)

__all__ = [
    "Pair",
    "Lexicon",
    "lexicon",
    "sentence_pair",
    "pairs",
    "iter_pairs",
    "split_of",
    "write_corpus",
    "read_corpus",
    "as_dataset",
    "LEXICON_SEED",
    "SPLIT_SEEDS",
    "MAX_WORDS",
    "MIN_WORDS",
    "VARIANTS",
]

#: Conventional seeds for drawing each split (any seed works: the split is by hash).
SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}
#: ``"base"``: the pair described above; ``"hard"``: polysemy, long-distance reordering,
#: idioms, unlinked function words and rare words (:mod:`groundroll.data.toy_translation_hard`).
VARIANTS = ("base", "hard")
MAX_WORDS = 15


def _generate(rng: random.Random, lex: Lexicon) -> Pair:
    def clause(src: _Src, *, second: bool) -> _Tgt:
        return _clause(rng, lex, src, short=second)
    return _sentence(rng, lex, clause, p_second=0.15, p_particle=0.15, max_words=MAX_WORDS)


def _generator(variant: str):
    if variant == "base":
        return lambda rng: _generate(rng, lexicon())
    if variant == "hard":
        return toy_translation_hard.generate
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def sentence_pair(rng: random.Random, *, variant: str = "base") -> Pair:
    """Draw one sentence pair with its gold alignment.

    Parameters
    ----------
    rng : random.Random
        Source of randomness; the pair is a deterministic function of its state.
    variant : {"base", "hard"}
        Which language pair (see :data:`VARIANTS`).

    Returns
    -------
    Pair
        Source and target words (3 to 15 source words; 18 for ``"hard"``) and the
        0-indexed alignment.

    Examples
    --------
    >>> import random
    >>> pair = sentence_pair(random.Random(0))
    >>> MIN_WORDS <= len(pair.src_words) <= MAX_WORDS
    True
    """
    return _generator(variant)(rng)


def split_of(src_words) -> str:
    """Which split (``"train"``, ``"dev"``, ``"test"``) a source sentence belongs to.

    A stable hash of the sentence: 90% train, 5% dev, 5% test.
    """
    bucket = zlib.crc32(" ".join(src_words).encode("utf-8")) % 20
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def iter_pairs(*, seed: int, split: str | None = None, variant: str = "base") -> Iterator[Pair]:
    """Endless stream of pairs from ``seed``, optionally only those of one split."""
    if split is not None and split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)} or None, got {split!r}")
    rng, generate = random.Random(seed), _generator(variant)
    while True:
        pair = generate(rng)
        if split is None or split_of(pair.src_words) == split:
            yield pair


def pairs(
    n: int, *, seed: int | None = None, split: str | None = None, variant: str = "base"
) -> list[Pair]:
    """``n`` sentence pairs, deterministic from ``seed``.

    Parameters
    ----------
    n : int
        Number of pairs.
    seed : int, optional
        Generator seed. Defaults to ``SPLIT_SEEDS[split]`` (0 when ``split`` is None).
    split : {"train", "dev", "test"}, optional
        Keep only sentences whose hash puts them in this split.
    variant : {"base", "hard"}
        Which language pair (see :data:`VARIANTS`).

    Examples
    --------
    >>> test = pairs(3, split="test")
    >>> [split_of(p.src_words) for p in test]
    ['test', 'test', 'test']
    >>> hard = pairs(2, split="test", variant="hard")
    >>> len(hard)
    2
    """
    if seed is None:
        seed = SPLIT_SEEDS.get(split, 0) if split else 0
    stream = iter_pairs(seed=seed, split=split, variant=variant)
    return [next(stream) for _ in range(n)]


# ----------------------------------------------------------------------------- files


def write_corpus(
    directory, n: int, seed: int | None = None, *, split: str | None = "test", variant: str = "base"
) -> Path:
    """Write ``src.txt``, ``tgt.txt`` and ``gold.talp`` (one sentence per line).

    Parameters
    ----------
    directory : path
        Created if missing.
    n, seed, split, variant
        As in :func:`pairs`; held-out test sentences by default.

    Returns
    -------
    pathlib.Path
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = pairs(n, seed=seed, split=split, variant=variant)
    (directory / "src.txt").write_text("".join(p.src + "\n" for p in data), encoding="utf-8")
    (directory / "tgt.txt").write_text("".join(p.tgt + "\n" for p in data), encoding="utf-8")
    write_talp(directory / "gold.talp", [p.alignment for p in data], force=True)
    return directory


def read_corpus(directory) -> list[Pair]:
    """Read a directory written by :func:`write_corpus` back into pairs."""
    directory = Path(directory)
    src = (directory / "src.txt").read_text(encoding="utf-8").splitlines()
    tgt = (directory / "tgt.txt").read_text(encoding="utf-8").splitlines()
    gold, _ = read_talp(directory / "gold.talp")
    return [Pair(tuple(s.split()), tuple(t.split()), frozenset(a))
            for s, t, a in zip(src, tgt, gold)]


def as_dataset(n: int, *, seed: int | None = None, split: str | None = None, variant: str = "base"):
    """The pairs as a Hugging Face ``datasets.Dataset``.

    Columns: ``src`` and ``tgt`` (str), ``src_words`` and ``tgt_words`` (list of str),
    ``alignment`` (list of ``[i, j]``, 0-indexed, sorted).
    """
    import datasets  # optional dependency

    data = pairs(n, seed=seed, split=split, variant=variant)
    return datasets.Dataset.from_dict(
        {
            "src": [p.src for p in data],
            "tgt": [p.tgt for p in data],
            "src_words": [list(p.src_words) for p in data],
            "tgt_words": [list(p.tgt_words) for p in data],
            "alignment": [[list(x) for x in sorted(p.alignment)] for p in data],
        }
    )
