"""Cases that pin down behaviour of the core modules which mutation testing showed the
other tests leave open (``make mutate``; README.md, "Mutation testing")."""

import numpy as np
import pytest
import torch

from groundroll.masks import normalize_maps
from groundroll.rollout import gradient_weighted, prune


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
