"""Cases that pin down behaviour of the core modules which mutation testing showed the
other tests leave open (``make mutate``; README.md, "Mutation testing")."""

import warnings

import numpy as np
import pytest
import torch

from groundroll.masks import label_map, normalize_maps, softmax_maps
from groundroll.rollout import (RolloutAccumulator, fuse_heads, gradient_weighted, prune,
                                residual_correct, rollout)


def test_gradient_weighting_per_head_keeps_heads_apart_worked_by_hand(close, tol):
    a = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]],
                       [[1.0, 0.0], [0.2, 0.8]]]])                 # [1, 2, 2, 2]
    g = torch.tensor([[[[2.0, -1.0], [1.0, 1.0]],
                       [[-3.0, 4.0], [0.5, 1.0]]]])
    want = torch.tensor([[[[0.5, 0.0], [0.5, 0.5]],
                          [[0.0, 0.0], [0.1, 0.8]]]])            # clamp(g * a, min=0)
    close(gradient_weighted(a, g, per_head=True), want, tol.HAND)
    close(gradient_weighted(a, g), want.mean(1), tol.HAND)


def test_gradient_weighting_errors_say_what_was_wrong():
    a = torch.full((1, 2, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"^gradient_weighted: grad is required$"):
        gradient_weighted(a, None, per_head=True)
    with pytest.raises(ValueError, match=r"attention.*\[batch, head, query, key\]"):
        gradient_weighted(a[0], a[0], per_head=True)
    with pytest.raises(ValueError, match="grad"):
        gradient_weighted(a, a[..., :1], per_head=True)


def test_prune_errors_name_the_option_and_the_expected_shape():
    a = torch.full((1, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"^prune_threshold must be a finite number"):
        prune(a, prune_threshold=float("nan"))
    with pytest.raises(ValueError, match=r"^top_k must be an integer >= 1, got 0"):
        prune(a, top_k=0)
    with pytest.raises(ValueError, match=r"^discard_ratio must be in \[0, 1\), got 1"):
        prune(a, discard_ratio=1.0)
    with pytest.raises(ValueError, match=r"attention.*\[\.\.\., query, key\]"):
        prune(torch.ones(3), top_k=1)
    with pytest.raises(ValueError, match="attention"):
        prune(torch.full((1,) * 7 + (2, 2), 0.5), top_k=1)        # rank 9: too many dims
    assert prune(torch.full((1,) * 6 + (2, 2), 0.5), top_k=1).shape == (1,) * 6 + (2, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_maps_worked_by_hand_and_keeps_the_dtype(dtype):
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]],          # span 4 from 1
                     [[2.0, 2.0], [2.0, 2.0]],          # flat: all zero
                     [[0.0, 0.25], [0.5, 0.5]]], dtype)   # span 0.5, max 0.5 (< 1)
    got = normalize_maps(maps)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, [[[0, 0.5], [0.25, 1]], [[0, 0], [0, 0]],
                                     [[0, 0.5], [1, 1]]])
    by_max = normalize_maps(maps, how="max")
    assert by_max.dtype == dtype
    np.testing.assert_allclose(by_max, [[[0.2, 0.6], [0.4, 1]], [[1, 1], [1, 1]],
                                        [[0, 0.5], [1, 1]]])
    negative = normalize_maps(-np.abs(maps[:1]), how="max")       # max <= 0: all zero
    np.testing.assert_array_equal(negative, np.zeros_like(maps[:1]))


def test_normalize_maps_of_a_single_map_flat_maps_and_bad_how():
    # One [h, w] map in, one out: (x - 1) / 3.
    np.testing.assert_allclose(normalize_maps(np.array([[1.0, 4.0], [2.0, 1.0]])),
                               [[0, 1], [1 / 3, 0]])
    np.testing.assert_allclose(normalize_maps(np.array([[0.0, 2.0]]), how="max"), [[0, 1]])
    # A flat map and an all-zero map are exactly zero, computed without a 0 / 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(normalize_maps(np.full((1, 2, 2), 3.0)), 0)
        np.testing.assert_array_equal(normalize_maps(np.zeros((1, 2, 2)), how="max"), 0)
    with pytest.raises(ValueError, match=r"^how must be 'minmax', 'max' or 'none', got"
                                         r" 'sum'$"):
        normalize_maps(np.ones((1, 2, 2)), how="sum")


def test_softmax_maps_worked_by_hand_and_stable_for_large_scores():
    # Pixel 0: scores (0, ln 3) -> (1/4, 3/4); with logit_scale 2: (1/10, 9/10).
    maps = np.array([[[0.0]], [[np.log(3.0)]]])
    np.testing.assert_allclose(softmax_maps(maps)[:, 0, 0], [0.25, 0.75])
    np.testing.assert_allclose(softmax_maps(maps, logit_scale=2.0)[:, 0, 0], [0.1, 0.9])
    # Scores of 1000 and 999 at one pixel and 0 and 0 at another: each pixel is
    # shifted by its own maximum, so neither overflows nor underflows to 0 / 0.
    big = np.array([[[1000.0, 0.0]], [[999.0, 0.0]]])
    e = np.exp(-1.0)
    np.testing.assert_allclose(softmax_maps(big)[:, 0, 0], [1 / (1 + e), e / (1 + e)])
    np.testing.assert_allclose(softmax_maps(big)[:, 0, 1], [0.5, 0.5])
    # axis=1 normalises along the rows instead of the prompts.
    np.testing.assert_allclose(softmax_maps(big, axis=2).sum(2), 1.0)


def test_label_map_background_bounds_empty_list_and_all_background():
    probs = np.array([[[0.9, 0.2]], [[0.1, 0.8]]])                 # P = 2
    np.testing.assert_array_equal(label_map(probs, background=[]), [[1, 2]])
    np.testing.assert_array_equal(label_map(probs, background=[-2]), [[0, 2]])  # = prompt 0
    np.testing.assert_array_equal(label_map(probs, background=[-1]), [[1, 0]])
    for bad in ([2], [-3], [0, 5], [-3, 1]):
        with pytest.raises(IndexError, match=rf"^background indices {bad} out of range"
                                             r" for 2 prompts$".replace("[", r"\[")
                                                               .replace("]", r"\]")):
            label_map(probs, background=bad)
    # Every prompt is background: with a mask threshold the answer is all background.
    out = label_map(probs, background=[0, 1], mask_threshold=0.5)
    assert out.dtype == np.int32 and out.shape == (1, 2)
    np.testing.assert_array_equal(out, 0)


def test_fuse_heads_max_and_head_weight_length():
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]]])   # [1, 3, 1, 2]
    torch.testing.assert_close(fuse_heads(a, "max"), torch.tensor([[[1.0, 1.0]]]))
    # Weighted mean (1 * h0 + 3 * h2) / 4, worked by hand.
    torch.testing.assert_close(fuse_heads(a, torch.tensor([1.0, 0.0, 3.0])),
                               torch.tensor([[[0.625, 0.375]]]))
    with pytest.raises(ValueError, match=r"^attention: head weights have length 2 but the"
                                         r" attention has 3 heads$"):
        fuse_heads(a, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"^attention: wrong rank"):
        fuse_heads(torch.ones(2, 2))


def test_prune_criteria_combine_and_limits_are_exclusive(close):
    a = torch.tensor([[[0.1, 0.2, 0.3, 0.4],
                       [0.3, 0.45, 0.05, 0.2],
                       [0.4, 0.3, 0.2, 0.1],
                       [0.1, 0.1, 0.1, 0.7]]])
    # prune_threshold is exclusive: 0.2 stays, 0.1 goes (the diagonal always stays).
    close(prune(a, prune_threshold=0.2)[0, 0], torch.tensor([0.1, 0.2, 0.3, 0.4]) / 1.0)
    close(prune(a, prune_threshold=0.2)[0, 2], torch.tensor([0.4, 0.3, 0.2, 0.0]) / 0.9)
    # Threshold and top_k together: an entry goes if either drops it.
    both = prune(a, prune_threshold=0.25, top_k=2, diagonal=False)
    close(both[0, 0], torch.tensor([0.0, 0.0, 0.3, 0.4]) / 0.7)
    close(both[0, 1], torch.tensor([0.3, 0.45, 0.0, 0.0]) / 0.75)
    # top_k equal to the key count keeps everything.
    close(prune(a, top_k=4), a)
    # discard_ratio 0.2 of 4 keys drops int(0.8) = 0 entries; 0.5 drops the two lowest.
    close(prune(a, discard_ratio=0.2), a)
    close(prune(a, discard_ratio=0.5, diagonal=False)[0, 2],
          torch.tensor([0.4, 0.3, 0.0, 0.0]) / 0.7)
    # Rectangular [Q=2, K=4]: pruning is along keys.
    r = a[:, :2]
    close(prune(r, top_k=1, diagonal=False)[0, 0], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    close(prune(r, discard_ratio=0.75, diagonal=False)[0, 0],
          torch.tensor([0.0, 0.0, 0.0, 1.0]))


def _layers_and_grads(seed=11, layers=3, heads=2, n=4):
    gen = torch.Generator().manual_seed(seed)
    attn = [torch.softmax(torch.randn(1, heads, n, n, generator=gen), -1)
            for _ in range(layers)]
    grads = [torch.randn(1, heads, n, n, generator=gen) for _ in range(layers)]
    return attn, grads


def _by_hand(attn, grads, fuse, residual=0.5):
    """Ã^(L) ... Ã^(1) with Ã = rownorm((1 - r) fuse_h(clamp(g * A, 0)) + r I), by loops."""
    n = attn[0].shape[-1]
    product = torch.eye(n)
    for a, g in zip(attn, grads):
        weighted = (g * a).clamp(min=0)[0]                          # [H, n, n]
        fused = fuse(weighted)
        step = (1 - residual) * fused + residual * torch.eye(n)
        step = step / step.sum(-1, keepdim=True)
        product = step @ product
    return product


@pytest.mark.parametrize("head_fusion,fuse", [("mean", lambda w: w.mean(0)),
                                              ("max", lambda w: w.amax(0))])
def test_gradient_weighted_rows_only_rollout_equals_the_product_by_hand(head_fusion, fuse,
                                                                        close, tol):
    attn, grads = _layers_and_grads()
    want = _by_hand(attn, grads, fuse)
    full = rollout(attn, grads=grads, head_fusion=head_fusion)
    close(full[0], want, tol.MODEL)
    close(rollout(attn, grads=grads, rows=[0, 2], head_fusion=head_fusion)[0],
          want[[0, 2]], tol.MODEL)
    # without the gradients it is a different map
    assert (rollout(attn, rows=[0], head_fusion=head_fusion)[0, 0] - want[0]).abs().max() > 1e-3


def test_rows_only_rollout_of_one_layer_and_bad_values():
    a = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]])
    # (A + I) / 2 row 0: [0.75, 0.25]
    torch.testing.assert_close(rollout([a], rows=[0]), torch.tensor([[[0.75, 0.25]]]))
    bad = a.clone()
    bad[0, 1, 0] = float("nan")
    # Row 1 of the top layer cannot reach read-out row 0: read (and checked) on request.
    torch.testing.assert_close(rollout([a, bad], rows=[0]), rollout([a, a], rows=[0]))
    with pytest.raises(ValueError, match=r"^layer 1: contains NaN or inf \(1 entries\)$"):
        rollout([a, bad], rows=[0], check_values="finite")
    with pytest.raises(ValueError, match=r"^layer 1: contains NaN or inf \(1 entries\)$"):
        rollout([a, bad], rows=[1])
    with pytest.raises(ValueError, match=r"^layer 0: contains NaN or inf"):
        rollout([bad, a], rows=[0], start_layer=1)


def test_rollout_and_accumulator_check_their_options():
    a = [torch.full((1, 2, 2), 0.5)]
    for options, message in (({"residual": 1.5}, r"^residual must be in \[0, 1\], got 1.5$"),
                             ({"prune_threshold": float("inf")},
                              r"^prune_threshold must be a finite number, got inf$"),
                             ({"discard_ratio": 1.0}, r"^discard_ratio must be in \[0, 1\)"),
                             ({"start_layer": -1},
                              r"^start_layer must be an integer >= 0, got -1$")):
        with pytest.raises(ValueError, match=message):
            rollout(a, **options)
        with pytest.raises(ValueError, match=message):
            RolloutAccumulator(**options)


def test_accumulator_agrees_with_rollout_on_kept_rows_and_gradients(close, tol):
    attn, grads = _layers_and_grads(seed=12, n=5)
    acc = RolloutAccumulator(top_k=1, keep=[3])
    for a in attn:
        acc.add(a)
    want = rollout(attn, top_k=1, keep=[3])
    close(acc.result(), want, tol.SAME)
    assert (want - rollout(attn, top_k=1)).abs().max() > 1e-3       # keep matters here
    acc = RolloutAccumulator()
    for a, g in zip(attn, grads):
        acc.add(a, g.requires_grad_(True))
    out = acc.result()
    assert not out.requires_grad
    close(out[0], _by_hand(attn, [g.detach() for g in grads], lambda w: w.mean(0)), tol.MODEL)


def test_accumulator_errors_say_what_was_wrong():
    acc = RolloutAccumulator(per_head=True)
    with pytest.raises(ValueError, match=r"^layer 0: per_head=True needs \[batch, head,"
                                         r" query, key\] weights, got shape \(1, 2, 2\)$"):
        acc.add(torch.full((1, 2, 2), 0.5))
    acc = RolloutAccumulator()
    with pytest.raises(ValueError, match=r"^layer 0: expected a torch.Tensor, got list$"):
        acc.add([[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"^layer 0: self-attention must be square"):
        acc.add(torch.full((1, 2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"^layer 0: head weights"):
        RolloutAccumulator(head_fusion=torch.tensor([1.0, 1.0, 1.0])).add(
            torch.full((1, 2, 3, 3), 1 / 3))
    acc.add(torch.full((1, 3, 2, 2), 0.5))                    # 3 heads, N = 2
    with pytest.raises(ValueError, match=r"^layer 1: mismatched N between layers, N=4 but"
                                         r" layer 0 has N=2$"):
        acc.add(torch.full((1, 3, 4, 4), 0.25))


def test_prune_threshold_and_top_k_drop_what_either_drops(close):
    a = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])                      # [1, Q=1, K=4]
    # threshold 0.35 keeps 0.4; top_k=2 keeps 0.3 and 0.4: together only 0.4 stays.
    close(prune(a, prune_threshold=0.35, top_k=2, diagonal=False),
          torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]))


def test_prune_keeps_each_batch_items_own_rows(close):
    a = torch.tensor([[[0.1, 0.9], [0.8, 0.2]],
                      [[0.1, 0.9], [0.8, 0.2]]])                    # [B=2, 2, 2]
    keep = torch.tensor([[0], [1]])                                 # row 0 for item 0, row 1 for 1
    got = prune(a, top_k=1, keep=keep, diagonal=False)
    close(got[0], torch.tensor([[0.1, 0.9], [1.0, 0.0]]))            # row 0 kept whole
    close(got[1], torch.tensor([[0.0, 1.0], [0.8, 0.2]]))            # row 1 kept whole
    with pytest.raises(ValueError, match=r"^keep: a \[batch, R\] tensor needs batched"
                                         r" attention$"):
        prune(a[0], top_k=1, keep=keep)


def test_check_messages_name_the_expected_shape_exactly():
    with pytest.raises(ValueError, match=r"^attention: wrong rank, expected \[batch, head,"
                                         r" query, key\], got shape \(2, 2, 2\)$"):
        gradient_weighted(torch.full((2, 2, 2), 0.5), torch.ones(2, 2, 2), per_head=True)
    with pytest.raises(ValueError, match=r"^attention: wrong rank, expected \[\.\.\., N, N\],"
                                         r" got shape \(3,\)$"):
        residual_correct(torch.ones(3))
    with pytest.raises(ValueError, match=r"^attention: wrong rank, expected \[\.\.\., N, N\]"):
        residual_correct(torch.full((1,) * 7 + (2, 2), 0.5))       # rank 9
    with pytest.raises(ValueError, match=r"^attention: wrong rank, expected \[\.\.\., query,"
                                         r" key\], got shape \(3,\)$"):
        prune(torch.ones(3), top_k=1)


def test_head_weights_of_another_dtype_and_per_head_gradients(close, tol):
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])                # float32 [1, 2, 1, 2]
    got = fuse_heads(a, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert got.dtype == torch.float32
    close(got, torch.tensor([[[0.25, 0.75]]]))
    attn, grads = _layers_and_grads(seed=13, layers=2)
    per_head = rollout(attn, grads=grads, per_head=True)            # [1, H, n, n]
    for h in range(2):
        close(per_head[0, h], _by_hand([x[:, h:h + 1] for x in attn],
                                       [g[:, h:h + 1] for g in grads],
                                       lambda w: w[0]), tol.MODEL)


def test_rows_only_rollout_of_fused_layers_with_gradients(close, tol):
    # Layers given already fused ([batch, N, N]): the gradient weighting is clamp(g * A, 0).
    attn, grads = _layers_and_grads(seed=14, heads=1)
    fused = [a[:, 0] for a in attn]
    fused_grads = [g[:, 0] for g in grads]
    want = _by_hand(attn, grads, lambda w: w[0])
    close(rollout(fused, grads=fused_grads, rows=[1])[0], want[[1]], tol.MODEL)
    bad = fused[1].clone()
    bad[0, 1, 2] = float("inf")                                    # in the read-out row
    with pytest.raises(ValueError, match=r"^layer 1: contains NaN or inf \(1 entries\)$"):
        rollout([fused[0], bad], rows=[1])


def test_accumulator_names_the_layer_of_a_batch_head_or_gradient_mismatch():
    acc = RolloutAccumulator(per_head=True)
    acc.add(torch.full((2, 3, 2, 2), 0.5))                          # batch 2, 3 heads
    with pytest.raises(ValueError, match=r"^layer 1: grad shape \(1, 3, 2, 2\) does not"
                                         r" match"):
        acc.add(torch.full((2, 3, 2, 2), 0.5), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"^layer 1: mismatched batch between layers,"
                                         r" batch=1 but layer 0 has batch=2$"):
        acc.add(torch.full((1, 3, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"^layer 1: per_head=True needs the same number of"
                                         r" heads in every layer, got 4 but layer 0 has 3$"):
        acc.add(torch.full((2, 4, 2, 2), 0.5))


@pytest.mark.parametrize("heads", [None, 2])
def test_rows_only_rollout_through_a_zero_row_without_residual(heads):
    # residual=0: Ã = rownorm(A). Layer 2 sends row 0 to token 1 entirely; token 1's row
    # in layer 1 is all zero (a padded query), so it stays zero: the CLS row of the
    # product is all zero, on both paths, and never NaN.
    first = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
    second = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    layers = [first, second] if heads is None else [
        x.unsqueeze(1).expand(1, heads, 2, 2).contiguous() for x in (first, second)]
    full = rollout(layers, residual=0.0)
    np.testing.assert_array_equal(full[0, 0].numpy(), [0.0, 0.0])
    rows = rollout(layers, residual=0.0, rows=[0])
    np.testing.assert_array_equal(rows[0].numpy(), [[0.0, 0.0]])


def _weighted_by_hand(attn, grads, weights, residual=0.5):
    """:func:`_by_hand` with a weighted mean over the heads, ``weights`` not normalised."""
    c = weights / weights.sum()
    return _by_hand(attn, grads, lambda w: (w * c.view(-1, 1, 1)).sum(0), residual)


@pytest.mark.parametrize("block_bytes", [None, 1])
def test_rows_only_gradient_weighted_with_head_weights_in_row_blocks(block_bytes,
                                                                     monkeypatch, close,
                                                                     tol):
    # Rows-only with gradients takes the head-by-head row-block path; block_bytes=1
    # puts one row in each block, so every block's product must add to the last.
    from groundroll.rollout import product

    if block_bytes is not None:
        monkeypatch.setattr(product, "_ROW_BLOCK_BYTES", block_bytes)
    attn, grads = _layers_and_grads(seed=21, heads=3, n=5)
    weights = torch.tensor([1.0, 2.0, 5.0])
    want = _weighted_by_hand(attn, grads, weights)
    got = rollout(attn, grads=grads, rows=[0, 3], head_fusion=weights)
    close(got[0], want[[0, 3]], tol.MODEL)
    # the plain mean differs: the weights reach the product
    assert (rollout(attn, grads=grads, rows=[0, 3])[0] - want[[0, 3]]).abs().max() > 1e-3
    # check_values="all" on the same path: the same product, and negatives named
    close(rollout(attn, grads=grads, rows=[0, 3], head_fusion=weights,
                  check_values="all")[0], want[[0, 3]], tol.MODEL)


def test_rows_only_fused_layers_check_values_on_the_row_block_path(close, tol):
    # Already fused [batch, N, N] layers, rows-only, no gradients, check_values="all":
    # the row-block path multiplies the layers as they are.
    attn, _ = _layers_and_grads(seed=22, heads=1, n=4)
    fused = [a[:, 0] for a in attn]
    want = _by_hand(attn, [torch.ones_like(a) for a in attn], lambda w: w[0])
    close(rollout(fused, rows=[2], check_values="all")[0], want[[2]], tol.MODEL)
    neg = fused[1].clone()
    neg[0, 2, 1] = -0.25
    with pytest.raises(ValueError, match=r"^layer 1: negative attention weights"):
        rollout([fused[0], neg], rows=[2], check_values="all")
    grads = [torch.ones_like(f) for f in fused[:2]]
    with pytest.raises(ValueError, match=r"^layer 1: negative attention weights"):
        rollout([fused[0], neg], rows=[2], grads=grads)
    # "finite" lets the negative weight through, clamped by the gradient weighting
    clamped = neg.clamp(min=0)
    close(rollout([fused[0], neg], rows=[2], grads=grads, check_values="finite"),
          rollout([fused[0], clamped], rows=[2], grads=grads), tol.MODEL)
    # the same with heads: each row block is scanned for NaN and inf only
    heads = [torch.stack([a[:, 0], a[:, 0].flip(-1)], 1) for a in attn[:2]]
    neg_heads = heads[1].clone()
    neg_heads[0, 1, 2, 1] = -0.25
    head_grads = [torch.ones_like(h) for h in heads]
    close(rollout([heads[0], neg_heads], rows=[2], grads=head_grads, check_values="finite"),
          rollout([heads[0], neg_heads.clamp(min=0)], rows=[2], grads=head_grads),
          tol.MODEL)


def test_layers_before_start_layer_are_checked_as_asked(close, tol):
    attn, _ = _layers_and_grads(seed=23, heads=2, n=4)
    neg = attn[0].clone()
    neg[0, 1, 0, 3] = -0.5
    with pytest.raises(ValueError, match=r"^layer 0: negative attention weights"):
        rollout([neg, *attn[1:]], rows=[0], start_layer=1, check_values="all")
    # "finite" checks NaN and inf only; the skipped layer does not enter the product
    close(rollout([neg, *attn[1:]], rows=[0], start_layer=1, check_values="finite"),
          rollout(attn, rows=[0], start_layer=1), tol.MODEL)


def test_rows_only_mean_keeps_float64_with_float32_head_weights(close):
    attn, _ = _layers_and_grads(seed=24, heads=3, n=5)
    layers = [a.double() for a in attn]
    weights = torch.tensor([3.0, 1.0, 1.0])                         # float32
    got = rollout(layers, rows=[1], head_fusion=weights)
    assert got.dtype == torch.float64
    want = _weighted_by_hand(attn, [torch.ones_like(a) for a in attn], weights)
    close(got[0].float(), want[[1]])
