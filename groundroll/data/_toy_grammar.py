"""The grammar and lexicon the toy language pairs share: :class:`Pair`, the base
:class:`Lexicon`, word forms and the clause and sentence builders.

:mod:`groundroll.data.toy_translation` (the base pair, and the public functions for
both variants) and :mod:`groundroll.data.toy_translation_hard` build on this module;
see the former for the rules.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

__all__ = ["Pair", "Lexicon", "lexicon", "LEXICON_SEED", "MIN_WORDS"]

LEXICON_SEED = 20240613
MIN_WORDS = 3


@dataclass(frozen=True)
class Pair:
    """A sentence pair with its gold alignment.

    Attributes
    ----------
    src_words, tgt_words : tuple of str
        Words of the source and target sentence.
    alignment : frozenset of (int, int)
        Sure links ``(source_index, target_index)``, 0-indexed.
    """

    src_words: tuple[str, ...]
    tgt_words: tuple[str, ...]
    alignment: frozenset[tuple[int, int]]

    @property
    def src(self) -> str:
        return " ".join(self.src_words)

    @property
    def tgt(self) -> str:
        return " ".join(self.tgt_words)

    def talp(self) -> str:
        """The alignment as a talp line, 1-indexed ``i-j`` pairs, sorted."""
        return " ".join(f"{i + 1}-{j + 1}" for i, j in sorted(self.alignment))

    def reversed(self) -> "Pair":
        """The pair read the other way round (target words first, links flipped), for
        training and scoring a target-to-source model.

        Examples
        --------
        >>> Pair(("a", "b"), ("x",), frozenset({(1, 0)})).reversed()
        Pair(src_words=('x',), tgt_words=('a', 'b'), alignment=frozenset({(0, 1)}))
        """
        return Pair(tuple(self.tgt_words), tuple(self.src_words),
                    frozenset((t, s) for s, t in self.alignment))


# ----------------------------------------------------------------------------- lexicon

_SRC_ONSETS = ["p", "t", "k", "m", "n", "l", "s", "r", "b", "d", "g", "f", "v"]
_SRC_VOWELS = ["a", "e", "i", "o", "u"]
_TGT_ONSETS = ["z", "sh", "ch", "th", "kr", "dr", "br", "h", "w", "y", "j", "x", "q"]
_TGT_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "au"]
_TGT_CODAS = ["", "", "n", "r", "s", "k"]


@dataclass(frozen=True)
class Lexicon:
    """Source and target forms by category.

    Content categories map a source form to a target form. ``compound_verbs`` map to
    ``(auxiliary, participle)``; ``contractions`` map a source preposition to the target
    word for "preposition + definite article".
    """

    nouns: dict[str, str]
    adjectives: dict[str, str]
    adverbs: dict[str, str]
    simple_verbs: dict[str, str]
    compound_verbs: dict[str, tuple[str, str]]
    transitive: frozenset[str]
    determiners: dict[str, str]
    definite: str
    prepositions: dict[str, str]
    contractions: dict[str, str]
    pronouns: dict[str, str]
    emphatic_particles: tuple[str, ...]
    final_particles: tuple[str, ...]
    conjunction: tuple[str, str]

    def source_words(self) -> set[str]:
        words = set(self.nouns) | set(self.adjectives) | set(self.adverbs)
        words |= set(self.simple_verbs) | set(self.compound_verbs) | set(self.determiners)
        words |= set(self.prepositions) | set(self.pronouns)
        words |= set(self.emphatic_particles) | set(self.final_particles)
        return words | {self.conjunction[0]}

    def target_words(self) -> set[str]:
        words = set(self.nouns.values()) | set(self.adjectives.values())
        words |= set(self.adverbs.values()) | set(self.simple_verbs.values())
        words |= {w for pair in self.compound_verbs.values() for w in pair}
        words |= set(self.determiners.values()) | set(self.prepositions.values())
        words |= set(self.contractions.values()) | set(self.pronouns.values())
        return words | {self.conjunction[1]}


class _Forms:
    """Draws unique word forms for one side of the pair."""

    def __init__(self, rng: random.Random, onsets, vowels, codas, forbidden=()):
        self.rng, self.onsets, self.vowels, self.codas = rng, onsets, vowels, codas
        self.used = set(forbidden)

    def draw(self, min_syllables: int, max_syllables: int) -> str:
        while True:
            n = self.rng.randint(min_syllables, max_syllables)
            word = "".join(
                self.rng.choice(self.onsets) + self.rng.choice(self.vowels) for _ in range(n)
            ) + self.rng.choice(self.codas)
            if word not in self.used:
                self.used.add(word)
                return word

    def many(self, count: int, min_syllables: int, max_syllables: int) -> list[str]:
        return [self.draw(min_syllables, max_syllables) for _ in range(count)]


@functools.lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The fixed lexicon of the toy language pair (a few hundred words per side)."""
    rng = random.Random(LEXICON_SEED)
    src = _Forms(rng, _SRC_ONSETS, _SRC_VOWELS, ["", "", "", "n"])
    # Function words first so they get the short forms.
    s_dets, s_preps = src.many(8, 1, 1), src.many(10, 1, 2)
    s_prons, s_parts, s_conj = src.many(6, 1, 1), src.many(4, 1, 1), src.draw(1, 1)
    s_nouns, s_adjs = src.many(140, 2, 3), src.many(60, 2, 3)
    s_advs, s_verbs = src.many(30, 3, 3), src.many(60, 2, 3)

    tgt = _Forms(rng, _TGT_ONSETS, _TGT_VOWELS, _TGT_CODAS, forbidden=src.used)
    t_dets, t_preps, t_contr = tgt.many(8, 1, 1), tgt.many(10, 1, 1), tgt.many(10, 1, 2)
    t_prons, t_conj, t_aux = tgt.many(6, 1, 1), tgt.draw(1, 1), tgt.many(2, 1, 1)
    t_nouns, t_adjs = tgt.many(140, 2, 3), tgt.many(60, 2, 3)
    t_advs, t_verbs, t_parts = tgt.many(30, 2, 3), tgt.many(30, 2, 3), tgt.many(30, 2, 3)

    transitive = frozenset(v for k, v in enumerate(s_verbs) if k % 2 == 0)
    aux_for = {v: t_aux[0] if v in transitive else t_aux[1] for v in s_verbs}
    return Lexicon(
        nouns=dict(zip(s_nouns, t_nouns)),
        adjectives=dict(zip(s_adjs, t_adjs)),
        adverbs=dict(zip(s_advs, t_advs)),
        simple_verbs=dict(zip(s_verbs[:30], t_verbs)),
        compound_verbs={v: (aux_for[v], p) for v, p in zip(s_verbs[30:], t_parts)},
        transitive=transitive,
        determiners=dict(zip(s_dets, t_dets)),
        definite=s_dets[0],
        prepositions=dict(zip(s_preps, t_preps)),
        contractions=dict(zip(s_preps, t_contr)),
        pronouns=dict(zip(s_prons, t_prons)),
        emphatic_particles=tuple(s_parts[:1]),
        final_particles=tuple(s_parts[1:]),
        conjunction=(s_conj, t_conj),
    )


# ----------------------------------------------------------------------------- grammar

# A generated word: its form and the source positions (within the sentence) it links to.
_Src = list  # list[str]
_Tgt = list  # list[tuple[str, tuple[int, ...]]]


def _word(rng, table: dict, src: _Src) -> _Tgt:
    """Append a source word drawn from ``table`` (source -> target form); return its one
    target word, linked to it."""
    word = rng.choice(sorted(table))
    src.append(word)
    return [(table[word], (len(src) - 1,))]


def _noun_phrase(rng, lex, src: _Src, *, allow_pronoun: bool):
    """Append a source NP; return its target words (form, linked source positions)."""
    if allow_pronoun and rng.random() < 0.2:
        return _word(rng, lex.pronouns, src)
    det = rng.choice(sorted(lex.determiners))
    adjs = rng.sample(sorted(lex.adjectives), rng.choices([0, 1, 2], [0.5, 0.35, 0.15])[0])
    noun = rng.choice(sorted(lex.nouns))
    start = len(src)
    src.extend([det, *adjs, noun])
    adj_pos = list(range(start + 1, start + 1 + len(adjs)))
    out = [(lex.determiners[det], (start,)), (lex.nouns[noun], (start + 1 + len(adjs),))]
    out += [(lex.adjectives[a], (p,)) for a, p in reversed(list(zip(adjs, adj_pos)))]
    return out


def _prepositional_phrase(rng, lex, src: _Src):
    prep = rng.choice(sorted(lex.prepositions))
    src.append(prep)
    prep_pos = len(src) - 1
    np_ = _noun_phrase(rng, lex, src, allow_pronoun=False)
    if src[prep_pos + 1] == lex.definite:
        # Two-to-one: preposition + definite article -> one contracted word.
        det_pos = prep_pos + 1
        return [(lex.contractions[prep], (prep_pos, det_pos))] + np_[1:]
    return [(lex.prepositions[prep], (prep_pos,))] + np_


def _clause(rng, lex, src: _Src, *, short: bool) -> _Tgt:
    subj = _noun_phrase(rng, lex, src, allow_pronoun=True)
    adv = _word(rng, lex.adverbs, src) if rng.random() < (0.15 if short else 0.3) else []
    if rng.random() < 0.12:
        src.append(rng.choice(lex.emphatic_particles))  # dropped: no target word
    verb = rng.choice(sorted(lex.simple_verbs) + sorted(lex.compound_verbs))
    src.append(verb)
    verb_pos = (len(src) - 1,)
    obj = []
    if verb in lex.transitive:
        obj = _noun_phrase(rng, lex, src, allow_pronoun=False)
    pp = []
    if rng.random() < (0.15 if short else 0.4):
        pp = _prepositional_phrase(rng, lex, src)
    if verb in lex.compound_verbs:
        aux, participle = lex.compound_verbs[verb]
        # One-to-two: auxiliary in second position, participle clause-final.
        return subj + [(aux, verb_pos)] + pp + obj + adv + [(participle, verb_pos)]
    return subj + pp + obj + adv + [(lex.simple_verbs[verb], verb_pos)]


def _sentence(rng: random.Random, lex, clause, *, p_second: float, p_particle: float,
              max_words: int) -> Pair:
    """Draw sentences until one has ``MIN_WORDS..max_words`` source words: a clause
    (``clause(src, second=False)`` appends it and returns its target words), then with
    probability ``p_second`` the conjunction and a second clause, then with probability
    ``p_particle`` a final particle."""
    while True:
        src: _Src = []
        tgt: _Tgt = clause(src, second=False)
        if rng.random() < p_second:
            src.append(lex.conjunction[0])
            tgt.append((lex.conjunction[1], (len(src) - 1,)))
            tgt += clause(src, second=True)
        if rng.random() < p_particle:
            src.append(rng.choice(lex.final_particles))  # dropped: no target word
        if MIN_WORDS <= len(src) <= max_words:
            break
    alignment = frozenset((i, j) for j, (_, links) in enumerate(tgt) for i in links)
    return Pair(tuple(src), tuple(w for w, _ in tgt), alignment)
