import itertools
import random

import pytest

from groundroll.data import toy_translation as toy

LEX = toy.lexicon()


def _tgt_index(pair, i):
    return sorted(j for s, j in pair.alignment if s == i)


def _first(predicate, n=3000, seed=11, variant="base"):
    """The first of ``n`` generated pairs that ``predicate`` accepts."""
    for pair in itertools.islice(toy.iter_pairs(seed=seed, variant=variant), n):
        if predicate(pair):
            return pair
    pytest.fail(f"no generated {variant} pair has the wanted shape")


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


# ----------------------------------------------------------------------------- hard variant

from groundroll.data import toy_translation_hard as hard  # noqa: E402

HX = hard.hard_lexicon()


def _hard_first(predicate):
    return _first(predicate, n=4000, seed=13, variant="hard")


def test_hard_variant_basics():
    assert toy.pairs(20, seed=3, variant="hard") == toy.pairs(20, seed=3, variant="hard")
    assert toy.pairs(20, seed=3, variant="hard") != toy.pairs(20, seed=3)
    test = toy.pairs(30, split="test", variant="hard")
    assert all(toy.split_of(p.src_words) == "test" for p in test)
    for pair in toy.pairs(400, seed=5, variant="hard"):
        assert toy.MIN_WORDS <= len(pair.src_words) <= hard.MAX_WORDS
        for i, j in pair.alignment:
            assert 0 <= i < len(pair.src_words) and 0 <= j < len(pair.tgt_words)
    with pytest.raises(ValueError, match="variant"):
        toy.pairs(1, variant="harder")
    assert not HX.source_words() & HX.target_words()


def test_hard_variant_is_a_function_of_the_source():
    """Context decides every translation: one source sentence, one target."""
    seen = {}
    for pair in toy.pairs(6000, seed=21, variant="hard"):
        assert seen.setdefault(pair.src, (pair.tgt, pair.alignment)) == (pair.tgt, pair.alignment)


def test_hard_polysemous_noun_follows_the_adjective_before_it():
    def has_poly(p):
        return any(w in HX.polysemous_nouns for w in p.src_words)

    senses = {}
    for pair in toy.pairs(3000, seed=17, variant="hard"):
        for i, w in enumerate(pair.src_words):
            if w in HX.polysemous_nouns and i > 0:
                (j,) = _tgt_index(pair, i)
                b = pair.src_words[i - 1] in HX.b_adjectives
                assert pair.tgt_words[j] == HX.polysemous_nouns[w][int(b)]
                senses.setdefault(w, set()).add(pair.tgt_words[j])
    assert any(len(s) == 2 for s in senses.values())      # both senses occur
    assert has_poly(_hard_first(has_poly))


def test_hard_polysemous_verb_follows_its_object():
    found = 0
    for pair in toy.pairs(3000, seed=19, variant="hard"):
        for i, w in enumerate(pair.src_words):
            if w in HX.polysemous_verbs:
                (j,) = _tgt_index(pair, i)
                # The object's noun: the first noun after the verb.
                noun = next(x for x in pair.src_words[i + 1:]
                            if x in HX.nouns or x in HX.polysemous_nouns)
                sense = 0 if noun in HX.animate else 1
                assert pair.tgt_words[j] == HX.polysemous_verbs[w][sense]
                found += 1
    assert found > 20


def test_hard_idioms_are_many_to_many():
    def idiom_at(p):
        for i in range(len(p.src_words) - 2):
            v, d, n = p.src_words[i:i + 3]
            if (v, n) in HX.idioms and d == HX.base.definite:
                return i
        return None

    pair = _hard_first(lambda p: idiom_at(p) is not None)
    i = idiom_at(pair)
    words = HX.idioms[(pair.src_words[i], pair.src_words[i + 2])]
    js = [pair.tgt_words.index(w) for w in words]
    assert {(s, j) for s in (i, i + 1, i + 2) for j in js} <= pair.alignment
    for s in (i, i + 1, i + 2):
        assert _tgt_index(pair, s) == sorted(js)


def test_hard_function_words_without_counterpart_and_fronting():
    pair = _hard_first(lambda p: HX.focus_particle in p.src_words)
    k = pair.src_words.index(HX.focus_particle)
    assert _tgt_index(pair, k) == []                      # no target word
    # The object (just before the particle) is fronted: its noun comes first in the
    # target clause, before the subject's words.
    obj_noun = pair.src_words[k - 1]
    (j_obj,) = _tgt_index(pair, k - 1)
    (j_subj,) = _tgt_index(pair, 0)
    assert j_obj < j_subj, (pair.src, pair.tgt)
    assert obj_noun in HX.nouns or obj_noun in HX.polysemous_nouns
    # Object markers have no source word.
    pair = _hard_first(lambda p: HX.object_marker in p.tgt_words)
    j = pair.tgt_words.index(HX.object_marker)
    assert not any(t == j for _, t in pair.alignment)


def test_hard_long_distance_reordering():
    pair = _hard_first(lambda p: any(w in HX.saying_verbs for w in p.src_words))
    i = next(k for k, w in enumerate(pair.src_words) if w in HX.saying_verbs)
    # The verb of saying goes to the very end, after the whole embedded clause.
    (j,) = _tgt_index(pair, i)
    assert j == len(pair.tgt_words) - 1 or pair.tgt_words[j + 1] == HX.base.conjunction[1]
    assert j - i >= 3
    big = [max(abs(i - j) for i, j in p.alignment) for p in toy.pairs(500, seed=2,
                                                                        variant="hard")]
    assert max(big) >= 10


def test_hard_rare_words_are_rare():
    from collections import Counter

    counts = Counter(w for p in toy.pairs(3000, seed=23, variant="hard") for w in p.src_words
                     if w in HX.nouns)
    rare = [w for w in HX.nouns if w not in HX.base.nouns]
    assert len(rare) >= 100
    top = counts.most_common(1)[0][1]
    assert max(counts[w] for w in rare) < top / 5


def test_hard_write_corpus_roundtrip(tmp_path):
    toy.write_corpus(tmp_path, 5, variant="hard")
    assert toy.read_corpus(tmp_path) == toy.pairs(5, split="test", variant="hard")


# ----------------------------------------------------------------------------- recipe, model


def test_recipe_trains_a_few_steps_on_the_hard_variant(tmp_path):
    import json

    from helpers.scripts import training_script

    recipe = training_script("toy_mt")
    meta = recipe.main(["--variant", "hard", "--out", str(tmp_path / "m"), "--steps", "3",
                        "--batch-size", "4", "--tokenizer-sentences", "200", "--eval-n", "2",
                        "--eval-every", "0", "--vocab-size", "300", "--d-model", "32",
                        "--ffn-dim", "64", "--threads", "1", "--fp16"])
    assert meta["variant"] == "hard" and meta["steps"] == 3
    saved = json.loads((tmp_path / "m/meta.json").read_text())
    assert saved["stages"][-1]["variant"] == "hard"
    assert "--variant hard" in saved["recipe"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    rare = sorted(w for w in HX.nouns if w not in HX.base.nouns)[:20]
    # A rare word is split into several pieces by the learned subword tokenizer.
    assert sum(len(tok.tokenize(w)) for w in rare) / len(rare) >= 2.5


def test_bundled_hard_model_translates_held_out_pairs():
    import groundroll as gr
    import torch

    bundle = gr.load("bundled:toy-mt-hard")
    assert bundle.meta["variant"] == "hard"
    data = toy.pairs(24, split="test", variant="hard")
    enc = bundle.tokenizer([p.src for p in data], padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = bundle.model.generate(**enc, num_beams=1, do_sample=False, max_length=64)
    hyps = [" ".join(s.split()) for s in bundle.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    exact = sum(h == p.tgt for h, p in zip(hyps, data)) / len(data)
    words = sum(len(set(h.split()) & set(p.tgt_words)) / len(p.tgt_words)
                for h, p in zip(hyps, data)) / len(data)
    # Measured on 500 held-out pairs: 91.0% exact (model card).
    assert exact >= 0.7 and words >= 0.9, (exact, words)


def test_bundled_reverse_model_translates_target_to_source():
    import groundroll as gr
    import torch

    bundle = gr.load("bundled:toy-mt-hard-reverse")
    assert bundle.meta["direction"] == "reverse"
    data = [p.reversed() for p in toy.pairs(24, split="test", variant="hard")]
    enc = bundle.tokenizer([p.src for p in data], padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = bundle.model.generate(**enc, num_beams=1, do_sample=False, max_length=64)
    hyps = [" ".join(s.split()) for s in bundle.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    exact = sum(h == p.tgt for h, p in zip(hyps, data)) / len(data)
    # Measured on 500 held-out pairs: 75.2% exact (model card).
    assert exact >= 0.5, exact
