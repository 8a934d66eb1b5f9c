"""Subword positions -> words, and subword matrices -> word matrices.

A tokenizer splits each whitespace-separated word into subwords and adds special tokens
(EOS, language codes, a decoder start token). Alignment is between *words*, so every
subword position gets a word index, or ``None`` for special and padding positions:

* fast tokenizers: from character offsets (``return_offsets_mapping``) of the sentence
  joined with single spaces, the same string that is translated, so the ids are exactly
  those the model sees;
* other tokenizers: from word-start markers in the token strings, SentencePiece's
  ``"▁"`` (also byte-level BPE's ``"Ġ"``), WordPiece's ``"##"`` continuation prefix and
  the ``"</w>"`` end-of-word suffix.

:func:`word_matrix` then sums over the source subwords of a word (columns) and averages
over the target subwords of a word (rows): a target word's row stays a distribution-like
mixture of its subwords' rows, and a source word collects all the attention its pieces
received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "Encoded",
    "encode_words",
    "words_from_ids",
    "word_ids_from_offsets",
    "word_ids_from_markers",
    "word_matrix",
]

WordIds = list  # list[int | None], one entry per subword position

_START_MARKERS = ("▁", "Ġ")


@dataclass
class Encoded:
    """One sentence as the model sees it.

    Attributes
    ----------
    ids : list of int
        Token ids, special tokens included, after truncation.
    word_ids : list of int or None
        Word index of each position; ``None`` for special tokens.
    words : list of str
        The words (whitespace-split sentence).
    truncated : bool
        Whether some word lost subwords to ``max_length``.
    """

    ids: list[int]
    word_ids: WordIds
    words: list[str]
    truncated: bool = False


def word_ids_from_offsets(offsets, special_mask, words: Sequence[str]) -> WordIds:
    """Word index of each token from character offsets into ``" ".join(words)``.

    A token belongs to the word that contains its first character, or to the next word
    when it starts on the separating space (SentencePiece's ``"▁x"`` pieces carry the
    space before the word). Special tokens and empty spans get ``None``.

    Examples
    --------
    >>> word_ids_from_offsets([(0, 2), (2, 4), (4, 5), (0, 0)], [0, 0, 0, 1], ["ab", "cd"])
    [0, 1, 1, None]
    """
    ends, pos = [], 0
    for w in words:
        pos += len(w)
        ends.append(pos)
        pos += 1
    out: WordIds = []
    for (start, end), special in zip(offsets, special_mask):
        if special or end <= start:
            out.append(None)
            continue
        k = int(np.searchsorted(ends, start, side="right"))
        out.append(k if k < len(words) else None)
    return out


def word_ids_from_markers(tokens: Sequence[str], special: Sequence[bool]) -> WordIds:
    """Word index of each token from word-boundary markers in the token strings.

    A token starting with ``"▁"`` or ``"Ġ"`` starts a word (a bare ``"▁"`` piece starts
    the word its next pieces complete); when some token starts with ``"##"``, tokens
    without it start words (WordPiece); when some token ends in ``"</w>"``, that suffix
    ends a word. Special tokens get ``None`` and do not break a word.

    Examples
    --------
    >>> word_ids_from_markers(["▁Das", "▁Ha", "us", "</s>"], [False, False, False, True])
    [0, 1, 1, None]
    >>> word_ids_from_markers(["un", "##able", "to"], [False, False, False])
    [0, 0, 1]
    """
    wordpiece = any(t.startswith("##") for t, s in zip(tokens, special) if not s)
    end_suffix = any(t.endswith("</w>") for t, s in zip(tokens, special) if not s)
    out: WordIds = []
    current = -1
    open_word = False  # end-suffix vocabularies: the last piece did not end its word
    for token, is_special in zip(tokens, special):
        if is_special:
            out.append(None)
            continue
        if wordpiece:
            starts = not token.startswith("##")
        elif end_suffix:
            starts = not open_word
            open_word = not token.endswith("</w>")
        else:
            starts = token.startswith(_START_MARKERS)
        if starts or current < 0:
            current += 1
        out.append(current)
    return out


def _special_flags(tokenizer, ids: Sequence[int]) -> list[bool]:
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    return [i in special for i in ids]


def _call(tokenizer, text: str, *, target: bool, **kwargs):
    if target:
        return tokenizer(text_target=text, **kwargs)
    return tokenizer(text, **kwargs)


def encode_words(tokenizer, words: Sequence[str], *, target: bool = False,
                 max_length: int | None = None, how: str = "auto") -> Encoded:
    """Tokenize a sentence given as words and map each position to its word.

    Parameters
    ----------
    tokenizer
        A Hugging Face tokenizer.
    words : sequence of str
        The sentence, already split on whitespace.
    target : bool
        Tokenize as the target side (``text_target=``: Marian's target vocabulary,
        mBART/NLLB target language codes).
    max_length : int, optional
        Truncate to this many tokens (special tokens included).
    how : {"auto", "offsets", "markers"}
        ``"auto"`` uses offsets where the tokenizer gives them (fast tokenizers), word
        start markers otherwise.

    Returns
    -------
    Encoded

    Examples
    --------
    >>> enc = encode_words(tokenizer, ["Das", "Haus"])          # doctest: +SKIP
    >>> enc.word_ids                                            # doctest: +SKIP
    [0, 1, 1, None]
    """
    if how not in ("auto", "offsets", "markers"):
        raise ValueError(f"how must be 'auto', 'offsets' or 'markers', got {how!r}")
    words = [str(w) for w in words]
    text = " ".join(words)
    kwargs = dict(truncation=max_length is not None, max_length=max_length)
    use_offsets = how == "offsets" or (how == "auto" and getattr(tokenizer, "is_fast", False))
    if use_offsets:
        enc = _call(tokenizer, text, target=target, return_offsets_mapping=True,
                    return_special_tokens_mask=True, **kwargs)
        ids = list(enc["input_ids"])
        word_ids = word_ids_from_offsets(enc["offset_mapping"], enc["special_tokens_mask"],
                                         words)
    else:
        ids = list(_call(tokenizer, text, target=target, **kwargs)["input_ids"])
        word_ids = _marker_word_ids(tokenizer, ids, target=target)
        if len({w for w in word_ids if w is not None}) > len(words):
            raise ValueError(f"word-start markers found more words than {len(words)} in"
                             f" {text!r}; use a fast tokenizer (offsets)")
    covered = {w for w in word_ids if w is not None}
    truncated = len(covered) < len(words)
    if truncated and max_length is None:
        missing = sorted(set(range(len(words))) - covered)
        raise ValueError(f"the tokenizer gave no tokens for words {missing} of {text!r}")
    return Encoded(ids=ids, word_ids=word_ids, words=words, truncated=truncated)


def _marker_word_ids(tokenizer, ids: Sequence[int], *, target: bool) -> WordIds:
    tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]
    return word_ids_from_markers(tokens, _special_flags(tokenizer, ids))


def words_from_ids(tokenizer, ids: Sequence[int], *, target: bool = True) -> Encoded:
    """Words and word indices of a token id sequence (a generated translation).

    The ids are decoded and the text re-tokenized; when that reproduces the same
    non-special ids (the usual case), words come from offsets, otherwise from word
    start markers, each word being the decoded text of its pieces.

    Returns
    -------
    Encoded
        ``ids`` are the given ids, unchanged.
    """
    ids = [int(i) for i in ids]
    special = _special_flags(tokenizer, ids)
    real = [i for i, s in zip(ids, special) if not s]
    text = tokenizer.decode(real, skip_special_tokens=True)
    words = text.split()
    if words and getattr(tokenizer, "is_fast", False):
        again = encode_words(tokenizer, words, target=target, how="offsets")
        pairs = [(i, w) for i, w in zip(again.ids, again.word_ids) if w is not None]
        if [i for i, _ in pairs] == real:
            it = iter(w for _, w in pairs)
            word_ids = [None if s else next(it) for s in special]
            return Encoded(ids=ids, word_ids=word_ids, words=words)
    word_ids = _marker_word_ids(tokenizer, ids, target=target)
    n = 1 + max((w for w in word_ids if w is not None), default=-1)
    groups = [[i for i, w in zip(ids, word_ids) if w == k] for k in range(n)]
    words = [tokenizer.decode(g, skip_special_tokens=True).strip() or "?" for g in groups]
    return Encoded(ids=ids, word_ids=word_ids, words=words)


def word_matrix(matrix, tgt_word_ids: WordIds, src_word_ids: WordIds, *,
                n_tgt: int, n_src: int) -> np.ndarray:
    """Aggregate a ``[T_sub, S_sub]`` subword matrix into ``[n_tgt, n_src]`` words.

    Columns: the sum over a source word's subwords. Rows: the mean over a target word's
    subwords. Positions whose word id is ``None`` (special tokens, padding) are dropped;
    ``tgt_word_ids``/``src_word_ids`` may be shorter than the matrix (padding).

    Returns
    -------
    ndarray of float64, shape [n_tgt, n_src]
        A word without subwords (lost to truncation) has a zero row or column.

    Examples
    --------
    >>> m = np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]])
    >>> word_matrix(m, [0, 0], [0, 1, 1], n_tgt=1, n_src=2)
    array([[0.3, 0.7]])
    """
    m = np.asarray(matrix, dtype=np.float64)
    cols = np.zeros((m.shape[1], n_src))
    for j, w in enumerate(src_word_ids[: m.shape[1]]):
        if w is not None:
            cols[j, w] = 1.0
    rows = np.zeros((n_tgt, m.shape[0]))
    for i, w in enumerate(tgt_word_ids[: m.shape[0]]):
        if w is not None:
            rows[w, i] = 1.0
    counts = rows.sum(1, keepdims=True)
    rows = np.divide(rows, counts, out=np.zeros_like(rows), where=counts > 0)
    return rows @ m @ cols
