"""Hand-worked cases for link extraction and symmetrisation.

Links are (s, t) with matrices [T, S]; every expected set below was worked by hand.
"""

import subprocess
import sys

import numpy as np
import pytest

from groundroll.alignment import links as L
from groundroll.alignment.extract import extract_links, mutual_scores


# Link extraction, symmetrisation and the file formats need no torch: neither the package
# (its public names load on first use) nor groundroll.alignment imports it for them.
_LOAD_EXTRACT = """
import sys
from groundroll.alignment.extract import extract_links
from groundroll.alignment import read_pharaoh, symmetrize
assert sorted(extract_links([[0.8, 0.2], [0.1, 0.9]])) == [(0, 0), (1, 1)]
assert "torch" not in sys.modules, "torch was imported"
"""


def test_argmax_orientation():
    # m[t, s]: 2 target words, 3 source words.
    m = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert L.argmax_links(m) == {(2, 0), (0, 1)}  # per target word
    assert L.argmax_links(m, axis=-1) == {(2, 0), (0, 1)}
    # per source word: s0 -> t1 (0.6), s1 -> t1 (0.3), s2 -> t0 (0.7)
    assert L.argmax_links(m, axis=0) == {(0, 1), (1, 1), (2, 0)}
    with pytest.raises(ValueError):
        L.argmax_links(m, axis=2)


def test_threshold_is_exclusive():
    m = np.array([[0.5, 0.2], [0.51, 0.9]])
    assert L.threshold_links(m, threshold=0.5) == {(0, 1), (1, 1)}


def test_links_to_matrix_roundtrip():
    links = {(0, 1), (2, 0)}
    mat = L.links_to_matrix(links, (2, 3))
    assert mat.shape == (2, 3) and mat[1, 0] and mat[0, 2] and mat.sum() == 2
    assert L.threshold_links(mat.astype(float), threshold=0.5) == links
    with pytest.raises(IndexError):
        L.links_to_matrix({(3, 0)}, (2, 3))


def test_itermax_adds_link_with_one_aligned_word():
    # Round 1 (ArgMax): rows t0->s0, t1->s1, t2->s1; columns s0->t0, s1->t2, s2->t2.
    # Mutual: (s0,t0), (s1,t2). Round 2: free row t1, free column s2; weights
    # 0.9 for cells with one aligned word, 1 for t1-s2, 0 elsewhere:
    # t0: [0, 0, .09]; t1: [.09, .63, .2]; t2: [0, 0, .27]
    # rows: t0->s2, t1->s1, t2->s2; columns: s0->t1, s1->t1, s2->t2
    # mutual and open: (s1,t1), (s2,t2).
    m = [[0.9, 0.5, 0.1], [0.1, 0.7, 0.2], [0.1, 0.8, 0.3]]
    assert L.itermax(m, max_iter=1) == {(0, 0), (1, 2)}
    assert L.itermax(m) == {(0, 0), (1, 2), (1, 1), (2, 2)}
    # A third round: every row is aligned, so nothing changes.
    assert L.itermax(m, max_iter=3) == L.itermax(m)


def test_itermax_second_case():
    # Round 1: columns s1 -> t0 (0.8 > 0.7), so mutual: (s0,t0), (s2,t2).
    # Round 2: free t1, free s1. t0: [0, .72, 0]; t1: [.09, .7, .18]; t2: [0, .09, 0]
    # rows -> s1, s1, s1; columns s0->t1, s1->t0, s2->t1: mutual open (s1, t0).
    m = [[0.9, 0.8, 0.1], [0.1, 0.7, 0.2], [0.1, 0.1, 0.3]]
    assert L.itermax(m) == {(0, 0), (1, 0), (2, 2)}


def test_itermax_small_matrix_is_argmax():
    # rows: t0->s0, t1->s1; columns: s0->t0, s1->t0 (0.8 > 0.7): only (s0, t0) is mutual,
    # and a side of length 2 stops IterMax after ArgMax.
    m = [[0.9, 0.8], [0.1, 0.7]]
    expected = L.intersection(L.argmax_links(m, axis=1), L.argmax_links(m, axis=0))
    assert expected == {(0, 0)}
    assert L.itermax(m, max_iter=5) == expected


def test_intersection_union():
    f, b = {(0, 0), (1, 1)}, {(0, 0), (1, 2)}
    assert L.intersection(f, b) == {(0, 0)}
    assert L.union(f, b) == {(0, 0), (1, 1), (1, 2)}


def test_grow_diag_adds_diagonal_neighbour():
    f, b = {(0, 0), (1, 1)}, {(0, 0)}
    # (1, 1) is the diagonal neighbour of (0, 0) and both its words are unaligned.
    assert L.grow_diag(f, b) == {(0, 0), (1, 1)}


def test_grow_diag_chains_and_horizontal():
    assert L.grow_diag({(0, 0), (1, 1), (2, 2)}, {(0, 0)}) == {(0, 0), (1, 1), (2, 2)}
    assert L.grow_diag({(0, 0), (0, 1)}, {(0, 0)}) == {(0, 0), (0, 1)}


def test_grow_diag_skips_points_with_both_words_aligned():
    f, b = {(0, 0), (1, 1), (0, 1)}, {(0, 0), (1, 1)}
    # (0, 1) neighbours (0, 0) but s0 and t1 are both aligned already.
    for heuristic in (L.grow_diag, L.grow_diag_final, L.grow_diag_final_and):
        assert heuristic(f, b) == {(0, 0), (1, 1)}


def test_grow_diag_ignores_non_neighbours():
    f, b = {(0, 0), (2, 2)}, {(0, 0)}
    assert L.grow_diag(f, b) == {(0, 0)}
    # FINAL and FINAL-AND both add it: s2 and t2 are unaligned.
    assert L.grow_diag_final(f, b) == {(0, 0), (2, 2)}
    assert L.grow_diag_final_and(f, b) == {(0, 0), (2, 2)}


def test_final_or_versus_final_and():
    f, b = {(0, 0), (2, 0)}, {(0, 0)}
    # (2, 0): source word 2 unaligned, target word 0 aligned.
    assert L.grow_diag(f, b) == {(0, 0)}
    assert L.grow_diag_final(f, b) == {(0, 0), (2, 0)}
    assert L.grow_diag_final_and(f, b) == {(0, 0)}


def test_final_runs_backward_then_forward():
    f, b = {(0, 0), (2, 3)}, {(0, 0), (3, 3)}
    # symal's FINAL takes the target-to-source (backward) leftovers first: (3, 3) goes in
    # (both words free); then forward's (2, 3) has a free source word (final adds it)
    # but an aligned target word (final-and does not).
    assert L.grow_diag_final(f, b) == {(0, 0), (2, 3), (3, 3)}
    assert L.grow_diag_final_and(f, b) == {(0, 0), (3, 3)}
    assert L.grow_diag_final_and(b, f) == {(0, 0), (2, 3)}


def test_grow_scan_order_is_target_major():
    # Intersection A = (s0, t2) and B = (s2, t0). Union adds cA = (s0, t1) (next to A)
    # and cB = (s2, t1) (next to B). Whichever goes in first aligns t1, and then the
    # other has both words aligned. symal expands in (t, s) order: B first, so cB wins.
    f = {(0, 2), (2, 0), (0, 1)}
    b = {(0, 2), (2, 0), (2, 1)}
    assert L.grow_diag(f, b) == {(0, 2), (2, 0), (2, 1)}
    assert L.grow_diag(b, f) == {(0, 2), (2, 0), (2, 1)}


def _reference_grow(forward, backward, diag, final, final_and):
    """Koehn's pseudocode, literally: grid scan over (e = target, f = source)."""
    union_ = forward | backward
    alignment = forward & backward
    n_t = 1 + max([t for _, t in union_], default=0)
    n_s = 1 + max([s for s, _ in union_], default=0)
    nbrs = [(-1, 0), (0, -1), (1, 0), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if diag else [])

    def t_free(t):
        return all(tt != t for _, tt in alignment)

    def s_free(s):
        return all(ss != s for ss, _ in alignment)

    changed = True
    while changed:
        changed = False
        for e in range(n_t):
            for f_ in range(n_s):
                if (f_, e) in alignment:
                    for de, df in nbrs:
                        e2, f2 = e + de, f_ + df
                        if (f2, e2) in union_ and (f2, e2) not in alignment and (t_free(e2) or s_free(f2)):
                            alignment.add((f2, e2))
                            changed = True
    if final:
        for a in (backward, forward):
            for e in range(n_t):
                for f_ in range(n_s):
                    if (f_, e) in a and (f_, e) not in alignment:
                        ok = (t_free(e) and s_free(f_)) if final_and else (t_free(e) or s_free(f_))
                        if ok:
                            alignment.add((f_, e))
    return alignment


def test_symmetrisation_matches_pseudocode_reference():
    rng = np.random.default_rng(1)
    for trial in range(300):
        T, S = rng.integers(1, 7, size=2)
        if trial % 2:
            m = rng.random((T, S))
            f, b = L.argmax_links(m, axis=0), L.argmax_links(m, axis=1)
        else:  # arbitrary (non-functional) link sets
            f = L.threshold_links(rng.random((T, S)), threshold=0.6)
            b = L.threshold_links(rng.random((T, S)), threshold=0.6)
        assert L.grow_diag(f, b) == _reference_grow(f, b, True, False, False)
        assert L.grow_diag_final(f, b) == _reference_grow(f, b, True, True, False)
        assert L.grow_diag_final_and(f, b) == _reference_grow(f, b, True, True, True)


def test_symmetrize_names():
    f, b = {(0, 0), (1, 1)}, {(0, 0)}
    assert L.symmetrize(f, b, how="grow_diag") == L.grow_diag(f, b)
    assert L.symmetrize(f, b, how="intersection") == {(0, 0)}
    with pytest.raises(ValueError, match="grow-diag-final-and"):
        L.symmetrize(f, b, how="nope")


def test_results_within_union_and_contain_intersection():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random((5, 6))
        f, b = L.argmax_links(m, axis=0), L.argmax_links(m, axis=1)
        for h in (L.grow_diag, L.grow_diag_final, L.grow_diag_final_and):
            out = h(f, b)
            assert L.intersection(f, b) <= out <= L.union(f, b)
        assert L.grow_diag(f, b) <= L.grow_diag_final_and(f, b)
        assert L.grow_diag(f, b) <= L.grow_diag_final(f, b)


def test_extract_imports_no_torch():
    done = subprocess.run([sys.executable, "-c", _LOAD_EXTRACT],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_mutual_extraction_by_hand():
    # Target 0 splits between sources 0 and 1 (an idiom: one target word, two source
    # words); target 1 is source 2's; target 2 (a particle) spreads over everything.
    m = np.array([[0.45, 0.45, 0.10],
                  [0.05, 0.05, 0.90],
                  [0.30, 0.30, 0.40]])
    # P(s | t): rows as they are (they sum to 1). P(t | s): columns normalised:
    # column 0 = [0.45, 0.05, 0.30] / 0.8, column 2 = [0.10, 0.90, 0.40] / 1.4.
    want = np.sqrt(m * (m / m.sum(0, keepdims=True)))
    np.testing.assert_allclose(mutual_scores(m), want)
    assert want[0, 0] == pytest.approx(np.sqrt(0.45 * 0.45 / 0.8))        # 0.503
    assert want[2, 0] == pytest.approx(np.sqrt(0.30 * 0.30 / 0.8))        # 0.335
    # At 0.4: the idiom's two links and target 1's link; the particle stays unlinked,
    # where argmax would force a link for it.
    assert extract_links(m, extraction="mutual", link_threshold=0.4) == {(0, 0), (1, 0),
                                                                          (2, 1)}
    assert (2, 2) in extract_links(m) and not any(
        t == 2 for _, t in extract_links(m, extraction="mutual", link_threshold=0.4))
    # A reverse model's scores replace the columns: it puts source 1 on target 2 alone,
    # so P(t=2 | s=1) = 1 and sqrt(0.30 * 1) = 0.548 links them; source 1 no longer
    # shares target 0 (sqrt(0.45 * 0) = 0).
    backward = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert extract_links(m, extraction="mutual", link_threshold=0.4,
                         backward=backward) == {(0, 0), (2, 1), (1, 2)}
    with pytest.raises(ValueError, match="combines both directions"):
        extract_links(m, extraction="mutual", symmetrize="union")


def test_extract_links_hand_worked():
    m = np.array([[0.8, 0.2, 0.0],
                  [0.1, 0.1, 0.8],
                  [0.0, 0.3, 0.7]])
    assert extract_links(m) == {(0, 0), (2, 1), (2, 2)}
    # Column argmax: source 0 -> t0, source 1 -> t2, source 2 -> t1.
    assert extract_links(m, symmetrize="intersection") == {(0, 0), (2, 1)}
    assert extract_links(m, symmetrize="union") == {(0, 0), (2, 1), (2, 2), (1, 2)}
    # Rows normalised: [.8 .2 0], [.1 .1 .8], [0 .3 .7]; > 0.25.
    assert extract_links(m, extraction="threshold", link_threshold=0.25) == {(0, 0), (2, 1), (1, 2), (2, 2)}
    assert extract_links(m, extraction="threshold") == {(0, 0), (2, 1), (2, 2)}   # > 0.3
    assert extract_links(m, extraction="itermax") >= {(0, 0), (2, 1)}
    with pytest.raises(ValueError, match="itermax"):
        extract_links(m, extraction="itermax", symmetrize="union")
    with pytest.raises(ValueError, match="symmetrize"):
        extract_links(m, symmetrize="diagonal")
    # A reverse model's matrix replaces the columns of the forward one.
    backward = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # Its column argmax: source 0 -> t1, source 1 -> t2, source 2 -> t0.
    assert extract_links(m, symmetrize="union", backward=backward) == {
        (0, 0), (2, 1), (2, 2), (0, 1), (1, 2), (2, 0)}
    assert extract_links(np.zeros((0, 3))) == set()


def _rownorm(m):
    """Rows of the clipped matrix divided by their sums, by a plain loop (zero rows stay zero)."""
    m = np.clip(np.asarray(m, dtype=float), 0, None)
    out = np.zeros_like(m)
    for t in range(m.shape[0]):
        total = sum(m[t])
        if total > 0:
            out[t] = [v / total for v in m[t]]
    return out


def _naive_links(m, extraction, symmetrize, backward, limit):
    """extract_links by loops over cells and the separately tested heuristics."""
    m = np.asarray(m, dtype=float)
    b = m if backward is None else np.asarray(backward, dtype=float)
    T, S = m.shape
    if extraction == "argmax":
        forward = {(max(range(S), key=lambda s: (m[t, s], -s)), t) for t in range(T)}
        reverse = {(s, max(range(T), key=lambda t: (b[t, s], -t))) for s in range(S)}
    else:
        rows, cols = _rownorm(m), _rownorm(b.T).T
        forward = {(s, t) for t in range(T) for s in range(S) if rows[t, s] > limit}
        reverse = {(s, t) for t in range(T) for s in range(S) if cols[t, s] > limit}
    found = forward if symmetrize is None else L.symmetrize(forward, reverse, how=symmetrize)
    return {(s, t) for s, t in found if m[t].any() and m[:, s].any()}


@pytest.mark.parametrize("extraction", ["argmax", "threshold"])
@pytest.mark.parametrize("symmetrize", [None, "intersection", "union", "grow-diag",
                                        "grow_diag_final", "grow-diag-final-and"])
def test_extraction_matches_a_loop_over_cells(extraction, symmetrize):
    rng = np.random.default_rng(7)
    for trial in range(40):
        T, S = rng.integers(1, 6, size=2)
        m = rng.random((T, S)) * (rng.random((T, S)) < 0.8)   # some exact zeros
        if trial % 3 == 0:
            m[rng.integers(T)] = 0.0                           # a word the model never scored
        backward = None if trial % 2 else rng.random((T, S))
        limit = [0.2, 0.3, 0.45][trial % 3]
        kwargs = {} if limit == 0.3 else {"link_threshold": limit}
        got = extract_links(m, extraction=extraction, symmetrize=symmetrize,
                            backward=backward, **kwargs)
        assert got == _naive_links(m, extraction, symmetrize, backward, limit), trial


def test_links_of_unscored_words_are_dropped():
    # Target 1 got no score (cut off by the length limit): argmax would link it to
    # source 0. Source 2 got none either: column argmax would link it to target 0.
    m = np.array([[0.6, 0.4, 0.0],
                  [0.0, 0.0, 0.0],
                  [0.2, 0.8, 0.0]])
    assert extract_links(m) == {(0, 0), (1, 2)}
    assert extract_links(m, symmetrize="union") == {(0, 0), (1, 2)}
    assert extract_links(m, extraction="itermax") == {(0, 0), (1, 2)}
    # A row of ones is scored like any other row.
    assert extract_links(np.array([[1.0, 1.0], [0.0, 1.0]])) == {(0, 0), (1, 1)}


def test_threshold_extraction_clips_negative_scores_and_takes_counts():
    # Row 0 clipped to [0, 3, 1] / 4 = [0, .75, .25]; row 1 = [.5, .5, 0].
    m = [[-2, 3, 1], [1, 1, 0]]
    assert extract_links(m, extraction="threshold") == {(1, 0), (0, 1), (1, 1)}
    assert extract_links(m, extraction="threshold", link_threshold=0.2) == {
        (1, 0), (2, 0), (0, 1), (1, 1)}
    # Integer counts from both directions: columns of [[2, 0], [2, 4]] are [.5, .5] and
    # [0, 1]; the rows of [[3, 1], [1, 3]] are [.75, .25] and [.25, .75].
    assert extract_links([[3, 1], [1, 3]], extraction="threshold", symmetrize="union",
                         backward=[[2, 0], [2, 4]], link_threshold=0.4) == {
        (0, 0), (1, 1), (0, 1)}
    np.testing.assert_allclose(mutual_scores([[3, 1], [1, 3]], [[2, 0], [2, 4]]),
                               np.sqrt([[0.75 * 0.5, 0.0], [0.25 * 0.5, 0.75]]))


def test_mutual_scores_zero_and_negative_cells():
    # Row 0 is all zero (no evidence): its scores are 0, not NaN. Row 2 has a negative
    # score, clipped to 0: rows [0 0], [.5 .5], [0 1]; columns of the clipped matrix
    # [0, 1, 0] / 1 and [0, 1, 2] / 3.
    m = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    want = np.sqrt([[0.0, 0.0], [0.5 * 1.0, 0.5 / 3], [0.0, 2 / 3]])
    np.testing.assert_array_equal(np.isnan(mutual_scores(m)), False)
    np.testing.assert_allclose(mutual_scores(m), want)


def test_mutual_threshold_default_and_exclusive_limit():
    # Rows [1, 0] and [.5, .5]; columns [.5, .5] and [0, 1]: scores
    # [[sqrt(.5), 0], [.5, sqrt(.5)]], with (s0, t1) exactly at 0.5.
    m = [[1.0, 0.0], [1.0, 1.0]]
    assert extract_links(m, extraction="mutual", link_threshold=0.5) == {(0, 0), (1, 1)}
    assert extract_links(m, extraction="mutual", link_threshold=0.49) == {(0, 0), (0, 1),
                                                                           (1, 1)}
    # Default DEFAULT_MUTUAL_THRESHOLD = 0.3.
    assert extract_links(m, extraction="mutual") == {(0, 0), (0, 1), (1, 1)}
    assert extract_links([[0.3, 0.7], [0.8, 0.2]], extraction="mutual") == {(1, 0), (0, 1)}


def test_itermax_extraction_is_itermax_of_the_averaged_directions():
    m = np.array([[0.9, 0.5, 0.1], [0.1, 0.7, 0.2], [0.1, 0.8, 0.3]])
    assert extract_links(m, extraction="itermax") == L.itermax(m) == {(0, 0), (1, 2),
                                                                      (1, 1), (2, 2)}
    # The reverse model's columns, averaged with the forward rows (worked by hand in
    # _rownorm): it puts source 1 firmly on target 1, so that link moves from t2 to t1.
    backward = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    combined = 0.5 * (_rownorm(m) + _rownorm(backward.T).T)
    got = extract_links(m, extraction="itermax", backward=backward)
    assert got == L.itermax(combined) != L.itermax(m)
    assert got == {(0, 0), (1, 1), (2, 2)}


def test_size_edge_cases():
    assert extract_links([[0.7]]) == {(0, 0)}
    assert extract_links([[0.7]], extraction="mutual") == {(0, 0)}
    assert extract_links(np.zeros((3, 0))) == set()
    assert extract_links(np.zeros((0, 3)), symmetrize="union") == set()


def test_extract_links_errors_say_what_was_wrong():
    from groundroll._options import OptionError

    m = np.eye(2)
    with pytest.raises(ValueError, match=r"^extraction must be one of \('argmax', "
                                         r"'threshold', 'itermax', 'mutual'\), got 'best'$"):
        extract_links(m, extraction="best")
    with pytest.raises(ValueError, match=r"^expected a \[T, S\] matrix, got shape \(2,\)$"):
        extract_links([0.5, 0.5])
    with pytest.raises(ValueError, match=r"^symmetrize must be one of \('intersection', "
                                         r"'union', .*\) or None, got 'diagonal'$"):
        extract_links(m, symmetrize="diagonal")
    for extraction in ("itermax", "mutual"):
        with pytest.raises(ValueError, match=rf"^extraction='{extraction}' combines both"
                                             r" directions itself; leave symmetrize=None$"):
            extract_links(m, extraction=extraction, symmetrize="grow-diag")
    with pytest.raises(ValueError, match=r"^backward matrix \(3, 2\) does not match \(2, 2\)$"):
        extract_links(m, symmetrize="union", backward=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"^backward matrix \(2, 3\) does not match \(2, 2\)$"):
        mutual_scores(m, np.ones((2, 3)))
    with pytest.raises(OptionError, match="link_threshold"):
        extract_links(m, extraction="threshold", link_threshold=1.5)


def test_itermax_takes_integer_counts_from_a_reverse_model():
    # Columns of the counts [[4, 0, 0], [0, 4, 1], [0, 0, 3]] are [1 0 0], [0 1 0],
    # [0 .25 .75]: the same as the float matrix.
    m = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    counts = [[4, 0, 0], [0, 4, 1], [0, 0, 3]]
    assert extract_links(m, extraction="itermax", backward=counts) == extract_links(
        m, extraction="itermax", backward=np.array(counts, dtype=float)) == {
        (0, 0), (1, 1), (2, 2)}
