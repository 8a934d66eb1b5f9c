"""The hard variant of the toy language pair: ``toy_translation.pairs(n, variant="hard")``.

It keeps the base pair's lexicon and rules (adjective-noun swap, verb-final clauses,
one-to-two compound verbs, two-to-one contractions, dropped particles) and adds what makes
real language pairs hard for aligners:

* **polysemy resolved by a neighbouring word**: some nouns have two translations, chosen
  by the class of the adjective right before them; some transitive verbs have two
  translations, chosen by the class (animate or not) of their object's noun;
* **long-distance reordering**: verbs of saying and thinking take a complement clause and
  move to the very end of the target sentence, after the whole (verb-final) embedded
  clause; an object followed by the source focus particle is fronted to the start of its
  target clause;
* **many-to-many idioms**: an intransitive verb followed by the definite article and one
  particular noun is an idiom, translated by two target words; all six links are gold;
* **function words with no counterpart**: the focus particle has no target word, and the
  target marks every object with a case particle that has no source word;
* **rare words**: nouns are drawn from a Zipf-like distribution over a larger vocabulary
  with long rare forms, so a subword tokenizer learned on the corpus splits rare words
  into several pieces.

Everything is deterministic from the generator's seed and the fixed lexicon seeds; the
split convention (a stable hash of the source sentence) is the base pair's.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from groundroll.data import _toy_grammar as base

__all__ = ["HardLexicon", "hard_lexicon", "generate", "MAX_WORDS", "HARD_LEXICON_SEED"]

HARD_LEXICON_SEED = 20251130
MAX_WORDS = 18


@dataclass(frozen=True)
class HardLexicon:
    """The base lexicon plus the hard variant's extra words.

    ``polysemous_nouns`` map a source noun to ``(sense_a, sense_b)``: sense b after an
    adjective in ``b_adjectives``. ``polysemous_verbs`` map a transitive source verb to
    ``(sense_a, sense_b)``: sense a when the object's noun is in ``animate``. ``idioms`` map
    ``(verb, noun)`` to two target words for ``verb <definite> noun``.
    """

    base: base.Lexicon
    nouns: dict[str, str]
    noun_weights: dict[str, float]
    animate: frozenset[str]
    b_adjectives: frozenset[str]
    polysemous_nouns: dict[str, tuple[str, str]]
    polysemous_verbs: dict[str, tuple[str, str]]
    saying_verbs: dict[str, str]
    complementizer: tuple[str, str]
    focus_particle: str
    object_marker: str
    idioms: dict[tuple[str, str], tuple[str, str]]

    def source_words(self) -> set[str]:
        words = self.base.source_words() | set(self.nouns) | set(self.polysemous_nouns)
        words |= set(self.polysemous_verbs) | set(self.saying_verbs)
        return words | {self.complementizer[0], self.focus_particle}

    def target_words(self) -> set[str]:
        words = self.base.target_words() | set(self.nouns.values())
        words |= {w for pair in self.polysemous_nouns.values() for w in pair}
        words |= {w for pair in self.polysemous_verbs.values() for w in pair}
        words |= {w for pair in self.idioms.values() for w in pair}
        words |= set(self.saying_verbs.values())
        return words | {self.complementizer[1], self.object_marker}


@functools.lru_cache(maxsize=1)
def hard_lexicon() -> HardLexicon:
    """The fixed lexicon of the hard variant."""
    lex = base.lexicon()
    rng = random.Random(HARD_LEXICON_SEED)
    taken = lex.source_words() | lex.target_words()
    src = base._Forms(rng, base._SRC_ONSETS, base._SRC_VOWELS, ["", "", "", "n"], forbidden=taken)
    s_focus, s_comp = src.draw(1, 1), src.draw(1, 1)
    s_saying, s_poly_v = src.many(6, 2, 3), src.many(10, 2, 3)
    s_poly_n, s_rare = src.many(16, 2, 3), src.many(120, 4, 5)
    tgt = base._Forms(
        rng, base._TGT_ONSETS, base._TGT_VOWELS, base._TGT_CODAS, forbidden=taken | src.used
    )
    t_marker, t_comp = tgt.draw(1, 1), tgt.draw(1, 1)
    t_saying, t_poly_v = tgt.many(6, 2, 3), tgt.many(20, 2, 3)
    t_poly_n, t_rare = tgt.many(32, 2, 3), tgt.many(120, 3, 5)
    t_idioms = tgt.many(24, 1, 2)

    nouns = dict(lex.nouns)
    nouns.update(zip(s_rare, t_rare))
    common = sorted(lex.nouns)
    # Zipf-like over the common nouns, a flat tail of rare nouns (about 6% of the mass).
    weights = {w: 1.0 / (rank + 2) for rank, w in enumerate(common)}
    tail = 0.06 * sum(weights.values()) / len(s_rare)
    weights.update({w: tail for w in s_rare})
    animate = frozenset(w for k, w in enumerate(sorted(nouns)) if k % 3 == 0)
    b_adjs = frozenset(a for k, a in enumerate(sorted(lex.adjectives)) if k % 2 == 1)
    intransitive = sorted(v for v in lex.simple_verbs if v not in lex.transitive)
    idiom_nouns = common[40:52]
    idioms = {
        (intransitive[k], idiom_nouns[k]): (t_idioms[2 * k], t_idioms[2 * k + 1]) for k in range(12)
    }
    return HardLexicon(
        base=lex,
        nouns=nouns,
        noun_weights=weights,
        animate=animate | frozenset(s_poly_n[::3]),
        b_adjectives=b_adjs,
        polysemous_nouns={w: (t_poly_n[2 * k], t_poly_n[2 * k + 1]) for k, w in enumerate(s_poly_n)},
        polysemous_verbs={w: (t_poly_v[2 * k], t_poly_v[2 * k + 1]) for k, w in enumerate(s_poly_v)},
        saying_verbs=dict(zip(s_saying, t_saying)),
        complementizer=(s_comp, t_comp),
        focus_particle=s_focus,
        object_marker=t_marker,
        idioms=idioms,
    )


# A generated target word: its form and the source positions it links to.


def _noun(rng, hx: HardLexicon) -> str:
    if rng.random() < 0.12:
        return rng.choice(sorted(hx.polysemous_nouns))
    names = sorted(hx.nouns)
    return rng.choices(names, [hx.noun_weights[w] for w in names])[0]


def _noun_phrase(rng, hx: HardLexicon, src: list, *, allow_pronoun: bool):
    lex = hx.base
    if allow_pronoun and rng.random() < 0.2:
        return base._word(rng, lex.pronouns, src), None
    det = rng.choice(sorted(lex.determiners))
    adjs = rng.sample(sorted(lex.adjectives), rng.choices([0, 1, 2], [0.45, 0.4, 0.15])[0])
    noun = _noun(rng, hx)
    start = len(src)
    src.extend([det, *adjs, noun])
    noun_pos = start + 1 + len(adjs)
    if noun in hx.polysemous_nouns:
        # The sense follows the adjective right before the noun (none: sense a).
        sense_b = bool(adjs) and adjs[-1] in hx.b_adjectives
        noun_tgt = hx.polysemous_nouns[noun][int(sense_b)]
    else:
        noun_tgt = hx.nouns[noun]
    out = [(lex.determiners[det], (start,)), (noun_tgt, (noun_pos,))]
    out += [(lex.adjectives[a], (start + 1 + k,)) for k, a in reversed(list(enumerate(adjs)))]
    return out, noun


def _prepositional_phrase(rng, hx: HardLexicon, src: list):
    lex = hx.base
    prep = rng.choice(sorted(lex.prepositions))
    src.append(prep)
    prep_pos = len(src) - 1
    np_, _ = _noun_phrase(rng, hx, src, allow_pronoun=False)
    if src[prep_pos + 1] == lex.definite:
        return [(lex.contractions[prep], (prep_pos, prep_pos + 1))] + np_[1:]
    return [(lex.prepositions[prep], (prep_pos,))] + np_


def _clause(rng, hx: HardLexicon, src: list, *, embedded: bool):
    lex = hx.base
    subj, _ = _noun_phrase(rng, hx, src, allow_pronoun=True)
    adv = base._word(rng, lex.adverbs, src) if rng.random() < (0.1 if embedded else 0.25) else []
    if rng.random() < 0.1:
        src.append(rng.choice(lex.emphatic_particles))  # dropped: no target word
    kinds = ["simple", "compound", "polysemous", "idiom"] + ([] if embedded else ["saying"])
    kind = rng.choices(kinds, [0.4, 0.25, 0.15, 0.1, 0.1][: len(kinds)])[0]
    if kind == "simple":
        verb = rng.choice(sorted(lex.simple_verbs))
    elif kind == "compound":
        verb = rng.choice(sorted(lex.compound_verbs))
    elif kind == "polysemous":
        verb = rng.choice(sorted(hx.polysemous_verbs))
    elif kind == "saying":
        verb = rng.choice(sorted(hx.saying_verbs))
    else:
        verb, idiom_noun = rng.choice(sorted(hx.idioms))
    src.append(verb)
    verb_pos = (len(src) - 1,)
    verb_tgt: list = []
    if kind == "idiom":
        # Many-to-many: verb + definite article + noun -> two words, all linked.
        src.extend([lex.definite, idiom_noun])
        links = (verb_pos[0], verb_pos[0] + 1, verb_pos[0] + 2)
        verb_tgt = [(w, links) for w in hx.idioms[(verb, idiom_noun)]]
    obj, fronted = [], False
    if kind == "polysemous" or (kind in ("simple", "compound") and verb in lex.transitive):
        obj, obj_noun = _noun_phrase(rng, hx, src, allow_pronoun=False)
        obj = obj + [(hx.object_marker, ())]  # target case particle: no source word
        if kind == "polysemous":
            animate = obj_noun in hx.animate
            verb_tgt = [(hx.polysemous_verbs[verb][0 if animate else 1], verb_pos)]
        if not embedded and rng.random() < 0.3:
            src.append(hx.focus_particle)  # no target word; fronts the object
            fronted = True
    if kind == "simple":
        verb_tgt = [(lex.simple_verbs[verb], verb_pos)]
    pp = []
    if rng.random() < (0.1 if embedded else 0.3):
        pp = _prepositional_phrase(rng, hx, src)
    comp = []
    if kind == "saying":
        src.append(hx.complementizer[0])
        comp = [(hx.complementizer[1], (len(src) - 1,))] + _clause(rng, hx, src, embedded=True)
        verb_tgt = [(hx.saying_verbs[verb], verb_pos)]
    aux = []
    if kind == "compound":
        aux_form, participle = lex.compound_verbs[verb]
        aux = [(aux_form, verb_pos)]
        verb_tgt = [(participle, verb_pos)]
    if fronted:
        return obj + subj + aux + pp + adv + comp + verb_tgt
    return subj + aux + pp + obj + adv + comp + verb_tgt


def generate(rng: random.Random) -> base.Pair:
    """Draw one hard-variant pair (3 to :data:`MAX_WORDS` source words)."""
    hx = hard_lexicon()

    def clause(src: list, *, second: bool) -> list:
        return _clause(rng, hx, src, embedded=second)
    return base._sentence(rng, hx.base, clause, p_second=0.12, p_particle=0.12,
                          max_words=MAX_WORDS)
