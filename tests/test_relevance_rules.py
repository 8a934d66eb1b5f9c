"""Chefer et al. (2021) generic relevance rules: hand-worked matrices, zero-row guard."""

import pytest
import torch

from groundroll.rollout import (
    gradient_weighted,
    relevance_co_update,
    relevance_normalize,
    relevance_self_update,
    self_relevance,
)


def test_self_update_twice(close):
    a_bar = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    once = relevance_self_update(torch.eye(2), a_bar)  # I + Ā
    close(once, [[1.5, 0.5], [0.0, 2.0]])
    # R + Ā R = [[1.5, .5], [0, 2]] + [[.75, 1.25], [0, 2]]
    close(relevance_self_update(once, a_bar), [[2.25, 1.75], [0.0, 4.0]])


def test_self_update_on_rectangular_cross_relevance(close):
    # R^sq (2 x 3) is updated by the s-stream self-attention from the left
    r_sq = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a_bar = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    close(relevance_self_update(r_sq, a_bar), [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])


def test_normalise_hand_case(close):
    # R - I = [[2, 2], [0, 0]] -> rows / sums = [[.5, .5], [0, 0]] -> + I
    close(relevance_normalize(torch.tensor([[3.0, 2.0], [0.0, 1.0]])),
          [[1.5, 0.5], [0.0, 1.0]])


def test_normalise_zero_rows_give_no_nan(close):
    eye = torch.eye(4).expand(3, 4, 4)
    out = relevance_normalize(eye)  # R - I is all zero: every row is guarded
    assert torch.isfinite(out).all()
    close(out, eye)
    half = torch.tensor([[1.0, 0.0], [0.3, 0.7]])  # row 1 of R - I sums to 0
    out = relevance_normalize(half)
    assert torch.isfinite(out).all()
    close(out, [[1.0, 0.0], [0.0, 1.0]])


R_SS = torch.tensor([[2.0, 1.0], [0.0, 1.0]])  # normalised: [[1.5, .5], [0, 1]]
A_SQ = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 2 querying, 3 attended tokens


@pytest.mark.parametrize("transpose, normalize, expected", [
    (True, True, [[1.5, 0.0, 0.0], [0.5, 0.0, 1.0]]),  # [[1.5, 0], [.5, 1]] @ A
    (False, True, [[1.5, 0.0, 0.5], [0.0, 0.0, 1.0]]),  # [[1.5, .5], [0, 1]] @ A
    (True, False, [[2.0, 0.0, 0.0], [1.0, 0.0, 1.0]]),  # [[2, 0], [1, 1]] @ A
])
def test_co_update_switches(transpose, normalize, expected, close):
    out = relevance_co_update(R_SS, torch.eye(3), A_SQ, transpose=transpose,
                              normalize=normalize)
    close(out, expected)


def test_co_update_right_factor_uses_attended_stream(close):
    # R_qq - I has only row 2 = [1, 1, 0] -> R̄_qq = I + [[0]*3, [0]*3, [.5, .5, 0]]
    r_qq = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = relevance_co_update(torch.eye(2), r_qq, A_SQ)
    close(out, [[1.0, 0.0, 0.0], [0.5, 0.5, 1.0]])
    batched = relevance_co_update(torch.eye(2).expand(4, 2, 2), r_qq.expand(4, 3, 3),
                                  A_SQ.expand(4, 2, 3))
    close(batched, out.expand(4, 2, 3))


def test_chain_encoder_cross_decoder(close):
    # a composer chains: encoder self rules -> decoder self rules -> cross increment
    gen = torch.Generator().manual_seed(0)
    r_enc, r_dec = torch.eye(5), torch.eye(3)
    for _ in range(2):
        r_enc = relevance_self_update(r_enc, torch.rand(5, 5, generator=gen))
        r_dec = relevance_self_update(r_dec, torch.rand(3, 3, generator=gen))
    cross = torch.rand(3, 5, generator=gen)
    r_dec_src = relevance_co_update(r_dec, r_enc, cross)
    expected = relevance_normalize(r_dec).T @ cross @ relevance_normalize(r_enc)
    close(r_dec_src, expected)
    assert r_dec_src.shape == (3, 5) and torch.isfinite(r_dec_src).all()


def test_gradient_weighted_clamps_per_head(close):
    attn = torch.tensor([[[[0.8, 0.2]], [[0.2, 0.8]]]])  # [1, 2, 1, 2]
    grad = torch.tensor([[[[1.0, -1.0]], [[-1.0, 2.0]]]])
    close(gradient_weighted(attn, grad), [[[0.4, 0.8]]])  # mean of [.8, 0], [0, 1.6]


def test_relevance_errors():
    with pytest.raises(ValueError, match=r"R_qq: shape \(2, 2\) must be \[\.\.\., Q, Q\]"):
        relevance_co_update(torch.eye(2), torch.eye(2), A_SQ)
    with pytest.raises(ValueError, match=r"R_ss: shape \(3, 3\) must be \[\.\.\., S, S\]"):
        relevance_co_update(torch.eye(3), torch.eye(3), A_SQ)
    with pytest.raises(ValueError, match=r"R: must be square"):
        relevance_normalize(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"A_bar: contains NaN or inf"):
        relevance_self_update(torch.eye(2), torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"A_bar: shape"):
        relevance_self_update(torch.eye(2), torch.eye(3))
    with pytest.raises(ValueError, match=r"grad is required"):
        gradient_weighted(torch.rand(1, 2, 2, 2), None)


def test_co_update_takes_rectangular_attended_rows_without_normalisation(close):
    # what the 3 attended tokens carry from 2 earlier tokens (a pooling hop)
    carried = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    out = relevance_co_update(R_SS, carried, A_SQ, normalize=False)
    close(out, R_SS.T @ A_SQ @ carried)
    with pytest.raises(ValueError, match=r"R_qq: shape \(3, 2\) must be \[\.\.\., Q, Q\]"):
        relevance_co_update(R_SS, carried, A_SQ)


def test_self_relevance_is_the_self_rule_folded_over_layers(close):
    # one head, all-ones gradients: Ā = A, R = (I + A2)(I + A1)
    a1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    a2 = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    layers = [a[None, None] for a in (a1, a2)]
    grads = [torch.ones_like(a) for a in layers]
    expected = (torch.eye(2) + a2) @ (torch.eye(2) + a1)
    close(self_relevance(layers, grads)[0], expected)
    close(self_relevance(layers, grads, start_layer=1)[0], torch.eye(2) + a2)
    heads = [torch.cat([a, 2 * a], 1) for a in layers]  # [1, 2, 2, 2]
    per_head = self_relevance(heads, [torch.ones_like(a) for a in heads], per_head=True)
    close(per_head[0, 0], expected)
    close(per_head[0, 1], (torch.eye(2) + 2 * a2) @ (torch.eye(2) + 2 * a1))
    with pytest.raises(ValueError, match=r"layer 1: no gradient"):
        self_relevance(layers, [grads[0], None])

