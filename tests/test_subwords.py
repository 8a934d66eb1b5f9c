"""Subword -> word mapping and aggregation, on hand-worked cases and real tokenizers
trained offline (BPE and Unigram with "▁" word starts, mBART/M2M100-style language
codes) and on toy-mt's shipped tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundroll.alignment.subwords import (
    encode_words,
    word_ids_from_markers,
    word_ids_from_offsets,
    word_matrix,
    words_from_ids,
)
from groundroll.data import toy_translation as toy

import test_align_api_models as models

TOY_MT = Path(__file__).resolve().parents[1] / "groundroll/zoo/bundled/toy-mt"


def test_offsets_hand_worked():
    # "ab cd": "▁ab" (0,2); "▁c" starts on the space (2,4); "d" (4,5); EOS special.
    assert word_ids_from_offsets([(0, 2), (2, 4), (4, 5), (0, 0)], [0, 0, 0, 1],
                                 ["ab", "cd"]) == [0, 1, 1, None]


def test_markers_hand_worked():
    assert word_ids_from_markers(["▁Das", "▁Ha", "us", "</s>"],
                                 [False, False, False, True]) == [0, 1, 1, None]
    # A bare "▁" piece starts the word its next piece completes; language codes skipped.
    assert word_ids_from_markers(["en_XX", "▁", "x", "▁y", "</s>"],
                                 [True, False, False, False, True]) == [None, 0, 0, 1, None]
    assert word_ids_from_markers(["un", "##able", "to"], [False] * 3) == [0, 0, 1]
    assert word_ids_from_markers(["lo", "w</w>", "er</w>"], [False] * 3) == [0, 0, 1]


def test_word_matrix_sums_source_and_averages_target():
    # Target subwords: [w0, w0, EOS]; source subwords: [w0, w1, w1, EOS].
    m = np.array([[0.1, 0.2, 0.3, 0.4],
                  [0.3, 0.2, 0.1, 0.4],
                  [0.9, 0.0, 0.0, 0.1]])
    out = word_matrix(m, [0, 0, None], [0, 1, 1, None], n_tgt=1, n_src=2)
    np.testing.assert_allclose(out, [[0.2, 0.4]])
    # Padding beyond the word ids is ignored; a word without subwords gets zeros.
    out = word_matrix(np.ones((4, 5)), [0, None], [1, 1, None], n_tgt=2, n_src=3)
    np.testing.assert_allclose(out, [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])


def test_bpe_tokenizer_hand_checked():
    tok = models.tokenizer("bpe")
    words = ["su", "tuga", "vefin"]
    enc = encode_words(tok, words)
    pieces = tok.convert_ids_to_tokens(enc.ids)
    assert pieces[-1] == "</s>" and enc.word_ids[-1] is None
    # Every piece starting with "▁" opens the next word; the others continue it.
    expected, k = [], -1
    for p in pieces[:-1]:
        k += p.startswith("▁")
        expected.append(k)
    assert enc.word_ids[:-1] == expected
    assert sorted(set(enc.word_ids[:-1])) == [0, 1, 2]
    assert "".join(p for p, w in zip(pieces, enc.word_ids) if w == 1) == "▁tuga"


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_offsets_and_markers_agree(kind):
    tok = models.tokenizer(kind)
    for pair in toy.pairs(40, split="test"):
        for words, target in ((pair.src_words, False), (pair.tgt_words, True)):
            a = encode_words(tok, words, target=target, how="offsets")
            b = encode_words(tok, words, target=target, how="markers")
            assert a.ids == b.ids
            assert a.word_ids == b.word_ids
            assert max(w for w in a.word_ids if w is not None) == len(words) - 1


@pytest.mark.parametrize("template, codes", [
    ("$A </s> en_XX", ("en_XX",)),          # mBART source
    ("__en__ $A </s>", ("__en__",)),         # M2M100 / NLLB
])
def test_language_codes_are_dropped(template, codes):
    tok = models.tokenizer("bpe", template=template, extra_specials=codes)
    words = ["su", "tuga"]
    enc = encode_words(tok, words)
    pieces = tok.convert_ids_to_tokens(enc.ids)
    for code in codes + ("</s>",):
        assert enc.word_ids[pieces.index(code)] is None
    assert {w for w in enc.word_ids if w is not None} == {0, 1}
    assert encode_words(tok, words, how="markers").word_ids == enc.word_ids


def test_t5_unigram_eos_dropped():
    tok = models.tokenizer("unigram")
    enc = encode_words(tok, ["thun", "krakron"], target=True)
    assert tok.convert_ids_to_tokens(enc.ids)[-1] == "</s>"
    assert enc.word_ids[-1] is None and set(enc.word_ids[:-1]) == {0, 1}


def test_truncation_is_reported():
    tok = models.tokenizer("bpe")
    words = toy.pairs(1, split="test")[0].src_words
    enc = encode_words(tok, words, max_length=4)
    assert len(enc.ids) == 4 and enc.truncated
    assert encode_words(tok, words).truncated is False


def test_words_from_generated_ids():
    tok = models.tokenizer("bpe")
    words = ["thun", "krakron", "quxe"]
    ids = encode_words(tok, words, target=True).ids
    got = words_from_ids(tok, ids)
    assert got.words == words and got.ids == ids
    assert got.word_ids == encode_words(tok, words, target=True).word_ids


def test_toy_mt_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOY_MT)
    for pair in toy.pairs(20, split="test"):
        for words, target in ((pair.src_words, False), (pair.tgt_words, True)):
            enc = encode_words(tok, words, target=target)
            assert enc.word_ids[-1] is None          # EOS
            assert sorted(set(w for w in enc.word_ids if w is not None)) == list(range(len(words)))
            assert encode_words(tok, words, target=target, how="markers").word_ids == enc.word_ids
            groups = [tok.decode([i for i, w in zip(enc.ids, enc.word_ids) if w == k]).strip()
                      for k in range(len(words))]
            assert groups == list(words)
