import random

import pytest

from groundroll.data import toy_translation as toy

LEX = toy.lexicon()


def _tgt_index(pair, i):
    return sorted(j for s, j in pair.alignment if s == i)


def _first(predicate, n=3000, seed=11):
    for pair in toy.iter_pairs(seed=seed):
        if predicate(pair):
            return pair
        n -= 1
        if n == 0:
            break
    pytest.fail("no generated pair has the wanted shape")


def test_deterministic_from_seed():
    assert toy.pairs(30, seed=3) == toy.pairs(30, seed=3)
    assert toy.pairs(30, seed=3) != toy.pairs(30, seed=4)
    assert toy.sentence_pair(random.Random(9)) == toy.sentence_pair(random.Random(9))
    assert toy.lexicon() is LEX


def test_lexicon_has_a_few_hundred_distinct_words_per_side():
    src, tgt = LEX.source_words(), LEX.target_words()
    assert 250 <= len(src) <= 600 and 250 <= len(tgt) <= 600
    assert not src & tgt


def test_lengths_and_links_in_range():
    for pair in toy.pairs(500, seed=5):
        assert toy.MIN_WORDS <= len(pair.src_words) <= toy.MAX_WORDS
        for i, j in pair.alignment:
            assert 0 <= i < len(pair.src_words) and 0 <= j < len(pair.tgt_words)
        # Every target word comes from some source word.
        assert {j for _, j in pair.alignment} == set(range(len(pair.tgt_words)))


def test_splits_are_disjoint_by_sentence():
    test = toy.pairs(100, split="test")
    assert all(toy.split_of(p.src_words) == "test" for p in test)
    train_src = {p.src for p in toy.pairs(3000, split="train", seed=0)}
    assert not train_src & {p.src for p in test}
    with pytest.raises(ValueError, match="split"):
        toy.pairs(1, split="validation")


def test_adjective_noun_swap_maps_crosswise():
    # Hand-worked: "det adj noun verb" (intransitive simple verb) must give
    # target "det noun adj verb" with links 0-0, 1-2, 2-1, 3-3.
    def shape(p):
        w = p.src_words
        return (len(w) == 4 and w[0] in LEX.determiners and w[1] in LEX.adjectives
                and w[2] in LEX.nouns and w[3] in LEX.simple_verbs)

    pair = _first(shape)
    d, a, n, v = pair.src_words
    assert pair.tgt_words == (LEX.determiners[d], LEX.nouns[n], LEX.adjectives[a],
                              LEX.simple_verbs[v])
    assert pair.alignment == {(0, 0), (1, 2), (2, 1), (3, 3)}


def test_two_adjectives_mirror_around_the_noun():
    for pair in toy.pairs(400, seed=2):
        w = pair.src_words
        for k in range(len(w) - 2):
            if w[k] in LEX.adjectives and w[k + 1] in LEX.adjectives and w[k + 2] in LEX.nouns:
                (j1,), (j2,), (jn,) = (_tgt_index(pair, k + d) for d in range(3))
                assert jn < j2 < j1


def test_compound_verb_links_to_auxiliary_and_participle():
    pair = _first(lambda p: any(w in LEX.compound_verbs for w in p.src_words)
                  and LEX.conjunction[0] not in p.src_words)
    i = next(k for k, w in enumerate(pair.src_words) if w in LEX.compound_verbs)
    aux, participle = LEX.compound_verbs[pair.src_words[i]]
    j_aux, j_part = _tgt_index(pair, i)
    assert (pair.tgt_words[j_aux], pair.tgt_words[j_part]) == (aux, participle)
    assert j_part == len(pair.tgt_words) - 1  # participle is clause-final


def test_simple_verb_is_clause_final():
    pair = _first(lambda p: any(w in LEX.simple_verbs for w in p.src_words)
                  and LEX.conjunction[0] not in p.src_words)
    i = next(k for k, w in enumerate(pair.src_words) if w in LEX.simple_verbs)
    assert _tgt_index(pair, i) == [len(pair.tgt_words) - 1]


def test_preposition_and_definite_article_contract_into_one_word():
    def shape(p):
        w = p.src_words
        return any(a in LEX.prepositions and b == LEX.definite for a, b in zip(w, w[1:]))

    pair = _first(shape)
    w = pair.src_words
    k = next(k for k in range(len(w) - 1) if w[k] in LEX.prepositions and w[k + 1] == LEX.definite)
    (j,) = _tgt_index(pair, k)
    assert _tgt_index(pair, k + 1) == [j]
    assert pair.tgt_words[j] == LEX.contractions[w[k]]
    assert {i for i, jj in pair.alignment if jj == j} == {k, k + 1}


def test_particles_are_dropped_without_links():
    particles = set(LEX.emphatic_particles) | set(LEX.final_particles)
    pair = _first(lambda p: particles & set(p.src_words))
    for i, w in enumerate(pair.src_words):
        if w in particles:
            assert _tgt_index(pair, i) == []
    assert len(pair.tgt_words) < len(pair.src_words) + 2


def test_talp_round_trip_is_one_indexed(tmp_path):
    data = toy.pairs(20, seed=8)
    toy.write_corpus(tmp_path, 20, seed=8, split=None)
    lines = (tmp_path / "gold.talp").read_text().splitlines()
    assert len(lines) == 20
    i, j = min(data[0].alignment)
    assert f"{i + 1}-{j + 1}" in lines[0].split()
    assert lines[0] == data[0].talp()
    assert toy.read_corpus(tmp_path) == data
    assert (tmp_path / "src.txt").read_text().splitlines()[0] == data[0].src


def test_as_dataset_columns():
    ds = toy.as_dataset(5, seed=1)
    assert len(ds) == 5
    first = toy.pairs(5, seed=1)[0]
    assert ds[0]["src"] == first.src
    assert {tuple(x) for x in ds[0]["alignment"]} == first.alignment
