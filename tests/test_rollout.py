"""Rollout core: hand-worked cases, paths that must agree, properties, input errors."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groundroll.rollout import (
    RolloutAccumulator,
    fuse_heads,
    prune,
    residual_correct,
    rollout,
    rollout_cross_update,
    rownorm,
    value_weighted,
)


def random_layers(seed, *, batch=2, heads=3, n=5, layers=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.softmax(3 * torch.randn(batch, heads, n, n, generator=gen), -1).to(dtype)
            for _ in range(layers)]


# ------------------------------------------------------------------ hand-worked


def test_rownorm_keeps_zero_rows_zero(close, tol):
    out = rownorm(torch.tensor([[2.0, 6.0], [0.0, 0.0]]))
    close(out, torch.tensor([[0.25, 0.75], [0.0, 0.0]]), tol.HAND)


def test_identity_attention_gives_identity_rollout(close, tol):
    eye = torch.eye(4).expand(2, 3, 4, 4)
    close(rollout([eye, eye, eye]), torch.eye(4).expand(2, 4, 4), tol.HAND)


def test_two_layers_three_tokens_worked_on_paper(close, tol):
    # fused [1, 3, 3] layers, residual 0.5:
    # Ã1 = [[1, 0, 0], [.25, .75, 0], [0, 0, 1]]
    # Ã2 = [[.5, .5, 0], [0, 1, 0], [0, .25, .75]]
    # R = Ã2 Ã1 = [[.625, .375, 0], [.25, .75, 0], [.0625, .1875, .75]]
    a1 = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    a2 = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]])
    expected = torch.tensor([[[0.625, 0.375, 0.0], [0.25, 0.75, 0.0],
                              [0.0625, 0.1875, 0.75]]])
    close(rollout([a1, a2]), expected, tol.HAND)
    close(rollout([a1, a2], rows=[2, 0]), expected[:, [2, 0]], tol.HAND)
    # start_layer=1 leaves only Ã2
    close(rollout([a1, a2], start_layer=1)[0, 0], torch.tensor([0.5, 0.5, 0.0]), tol.HAND)


def test_residual_edge_cases(close, tol):
    layers = random_layers(0)
    fused = [a.mean(1) for a in layers]
    close(rollout(layers, residual=1.0), torch.eye(5).expand(2, 5, 5), tol.HAND)
    close(rollout(layers, residual=0.0), fused[2] @ fused[1] @ fused[0])
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    close(residual_correct(a, 0.25), torch.tensor([[0.25, 0.75], [0.75, 0.25]]), tol.HAND)


HEAD0 = [[0.8, 0.2], [0.4, 0.6]]
HEAD1 = [[0.2, 0.8], [0.6, 0.4]]
TWO_HEADS = torch.tensor([[HEAD0, HEAD1]])  # [1, 2, 2, 2]


@pytest.mark.parametrize("how, expected", [
    ("mean", [[0.5, 0.5], [0.5, 0.5]]),
    ("max", [[0.8, 0.8], [0.6, 0.6]]),
    ("min", [[0.2, 0.2], [0.4, 0.4]]),
    (torch.tensor([3.0, 1.0]), [[0.65, 0.35], [0.45, 0.55]]),
])
def test_head_fusion_hand_case(how, expected, close, tol):
    close(fuse_heads(TWO_HEADS, how), torch.tensor([expected]), tol.HAND)
    close(fuse_heads(TWO_HEADS, head_fusion=how), torch.tensor([expected]), tol.HAND)


def test_gradient_fusion_clamps_before_the_mean(close, tol):
    grad = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]], [[-1.0, 1.0], [0.0, 1.0]]]])
    # per head clamp(grad * attn): [[.8, 0], [.8, 0]] and [[0, .8], [0, .4]]
    # (mean first, then clamp, would give [[.3, .3], [.4, .2]])
    close(fuse_heads(TWO_HEADS, grad=grad), torch.tensor([[[0.4, 0.4], [0.4, 0.2]]]),
          tol.HAND)


def test_fused_input_is_returned_unchanged(close):
    fused = torch.rand(2, 4, 4)
    close(fuse_heads(fused, "max"), fused, 0)


def test_max_fusion_rollout_is_renormalised(close, tol):
    out = rollout([TWO_HEADS], head_fusion="max")
    # rownorm(.5 * [[.8, .8], [.6, .6]] + .5 * I) = [[.9, .4], [.3, .8]] / rowsum
    close(out, torch.tensor([[[0.9 / 1.3, 0.4 / 1.3], [0.3 / 1.1, 0.8 / 1.1]]]), tol.HAND)


PRUNE_IN = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])


def test_top_k_hand_case(close, tol):
    out = prune(PRUNE_IN, top_k=1)
    # row 0 keeps .6 (also the diagonal); row 1 keeps .7 and the diagonal .2;
    # row 2 keeps .5 and the diagonal .1
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.2 / 0.9, 0.7 / 0.9],
                             [0.5 / 0.6, 0.0, 0.1 / 0.6]])
    close(out, expected, tol.HAND)
    # keep=[0]: row 0 whole and column 0 whole
    expected_keep = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7],
                                  [0.5 / 0.6, 0.0, 0.1 / 0.6]])
    close(prune(PRUNE_IN, top_k=1, keep=[0]), expected_keep, tol.HAND)



def test_prune_without_diagonal_for_cross_attention(close, tol):
    # cross-attention with as many queries as keys: query i and key i are unrelated,
    # so top_k=1 keeps exactly the largest entry of every row
    out = prune(PRUNE_IN, top_k=1, diagonal=False)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    close(out, expected, tol.HAND)
    # keep=[0] keeps row 0 whole, and no column
    expected_keep = torch.tensor([[0.6, 0.3, 0.1], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    close(prune(PRUNE_IN, top_k=1, keep=[0], diagonal=False), expected_keep, tol.HAND)

def test_prune_threshold_and_discard_ratio_hand_cases(close, tol):
    expected = torch.tensor([[0.6 / 0.9, 0.3 / 0.9, 0.0], [0.0, 0.2 / 0.9, 0.7 / 0.9],
                             [0.5, 0.4, 0.1]])  # (2, 2) = .1 is the diagonal: kept
    close(prune(PRUNE_IN, prune_threshold=0.25), expected, tol.HAND)
    close(prune(PRUNE_IN, discard_ratio=0.34), expected, tol.HAND)  # drops 1 per row


@pytest.mark.parametrize("option", [{"prune_threshold": 0.9}, {"top_k": 1},
                                    {"discard_ratio": 0.9}])
def test_pruning_never_removes_diagonal_or_read_out(option, close):
    gen = torch.Generator().manual_seed(1)
    a = torch.softmax(torch.randn(3, 2, 6, 6, generator=gen), -1)
    keep = torch.tensor([[0], [3], [5]])
    out = prune(a, keep=keep, **option)
    assert (torch.diagonal(out, dim1=-2, dim2=-1) > 0).all()
    for b, k in enumerate(keep[:, 0].tolist()):
        close(out[b, :, k], a[b, :, k])  # read-out row untouched (already stochastic)
        assert (out[b, :, :, k] > 0).all()  # read-out column kept
    # rollout prunes after fusion and residual, keeping the read-out row and column
    layers = [torch.softmax(torch.randn(1, 2, 6, 6, generator=gen), -1) for _ in range(3)]
    manual = [prune(residual_correct(a.mean(1)), keep=[4], **option) for a in layers]
    expected = (manual[2] @ manual[1] @ manual[0])[:, [4]]
    close(rollout(layers, rows=[4], **option), expected)


def test_value_weighted_hand_case(close, tol):
    a = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    norms = torch.tensor([[[1.0, 3.0]]])
    close(value_weighted(a, norms), torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]]),
          tol.HAND)
    assert torch.isfinite(value_weighted(a, torch.zeros(1, 1, 2))).all()


# -------------------------------------------------------------- must agree


def naive_rollout(layers, residual=0.5, start_layer=0):
    """Plain-python reference: mean fusion, residual, rownorm, products, no torch ops."""
    batch, heads, n = len(layers[0]), len(layers[0][0]), len(layers[0][0][0])
    out = []
    for b in range(batch):
        product = None
        for layer in layers[start_layer:]:
            a = [[sum(layer[b][h][i][j] for h in range(heads)) / heads for j in range(n)]
                 for i in range(n)]
            a = [[(1 - residual) * a[i][j] + residual * (i == j) for j in range(n)]
                 for i in range(n)]
            a = [[v / sum(row) for v in row] for row in a]
            if product is None:
                product = a
            else:
                product = [[sum(a[i][k] * product[k][j] for k in range(n))
                            for j in range(n)] for i in range(n)]
        out.append(product)
    return out


@pytest.mark.parametrize("residual, start_layer", [(0.5, 0), (0.3, 1), (0.0, 0)])
def test_matches_naive_python_loop(residual, start_layer, close):
    layers = random_layers(2, batch=2, heads=2, n=4, layers=3, dtype=torch.float64)
    expected = torch.tensor(naive_rollout([a.tolist() for a in layers], residual,
                                          start_layer), dtype=torch.float64)
    close(rollout(layers, residual=residual, start_layer=start_layer), expected, 1e-12)


def causal_layers(seed, *, batch=2, heads=3, n=8, layers=3):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    return [torch.softmax(torch.randn(batch, heads, n, n, generator=gen, dtype=torch.float64)
                          .masked_fill(~mask, float("-inf")), -1) for _ in range(layers)]


def pick(full, rows):
    idx = torch.as_tensor(rows)
    return full[:, idx] if idx.dim() == 1 else torch.stack([full[b, r] for b, r in enumerate(idx)])


@pytest.mark.parametrize("rows", [[0], [2], [1, 3], torch.tensor([[2], [5]])])
def test_rows_only_on_causal_layers_matches_naive_loop(rows, close):
    # Early read-out rows under causal attention weigh only earlier rows, which the
    # rows-only path reads alone; the answer must still be the naive product's rows.
    layers = causal_layers(4)
    full = torch.tensor(naive_rollout([a.tolist() for a in layers]), dtype=torch.float64)
    close(rollout(layers, rows=rows), pick(full, rows), 1e-12)
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    close(rollout(layers, rows=rows, head_fusion=weights),
          pick(rollout(layers, head_fusion=weights), rows), 1e-12)


def test_rows_only_reads_rows_that_reach_the_result_only():
    # A NaN in a top-layer row that no read-out row weighs cannot change the answer:
    # the default skips that row; check_values="finite" reads it and raises.
    layers = random_layers(7, batch=1, heads=2, n=5, layers=3)
    clean = rollout(layers, rows=[1])
    bad = [a.clone() for a in layers]
    bad[-1][0, 1, 3, 2] = float("nan")
    assert torch.equal(rollout(bad, rows=[1]), clean)
    with pytest.raises(ValueError, match="layer 2: contains NaN or inf"):
        rollout(bad, rows=[1], check_values="finite")
    bad[-1][0, 0, 1, 4] = float("nan")  # in a row the result reads
    with pytest.raises(ValueError, match="layer 2: contains NaN or inf"):
        rollout(bad, rows=[1])


def test_rows_only_with_autograd_reads_a_row_subset(close):
    # Weights that need gradients take torch's matmul on the gathered rows.
    layers = [a.requires_grad_() for a in random_layers(9, batch=2, heads=3, n=6)]
    out = rollout(layers, rows=[0, 4])
    close(out, rollout(layers)[:, [0, 4]], 1e-6)
    out.sum().backward()
    assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in layers)


OPTION_SETS = [
    {},
    {"head_fusion": "max"},
    {"head_fusion": "min", "residual": 0.3},
    {"head_fusion": torch.tensor([1.0, 2.0, 0.5])},
    {"top_k": 2},
    {"prune_threshold": 0.2, "start_layer": 1},
    {"discard_ratio": 0.5, "head_fusion": "max"},
    {"per_head": True},
    {"per_head": True, "top_k": 3},
]


@pytest.mark.parametrize("options", OPTION_SETS)
def test_rows_only_equals_rows_of_full_product(options, close):
    layers = random_layers(3)
    rows = [0, 3]
    full = rollout(layers, keep=rows, **options)
    part = rollout(layers, rows=rows, **options)
    close(part, full[..., rows, :])


def test_per_example_rows_tensor(close):
    layers = random_layers(4, batch=3)
    rows = torch.tensor([[0, 1], [4, 4], [2, 0]])
    full = rollout(layers, keep=rows, top_k=2)
    part = rollout(layers, rows=rows, top_k=2)
    for b in range(3):
        close(part[b], full[b, rows[b]])
    assert part.shape == (3, 2, 5)


@pytest.mark.parametrize("options", OPTION_SETS + [
    {"rows": [0]},
    {"rows": torch.tensor([[1], [2]]), "top_k": 2},
    {"rows": [0, 4], "per_head": True, "discard_ratio": 0.4},
    {"rows": [2], "head_fusion": "max", "prune_threshold": 0.1, "start_layer": 2},
])
def test_accumulator_equals_batch(options, close):
    layers = random_layers(5, layers=4)
    acc = RolloutAccumulator(**options)
    for a in layers:
        acc.add(a)
    assert acc.layers == 4
    close(acc.result(), rollout(layers, **options))


def test_accumulator_with_gradients_equals_batch(close):
    layers = random_layers(6)
    gen = torch.Generator().manual_seed(6)
    grads = [torch.randn(a.shape, generator=gen) for a in layers]
    acc = RolloutAccumulator(rows=[0])
    for a, g in zip(layers, grads):
        acc.add(a, g)
    close(acc.result(), rollout(layers, rows=[0], grads=grads))


def test_accumulator_keeps_no_layers_and_detaches():
    layers = [a.requires_grad_() for a in random_layers(7)]
    acc = RolloutAccumulator()
    for a in layers:
        acc.add(a)
    out = acc.result()
    assert not out.requires_grad
    tensors = [v for v in vars(acc).values() if isinstance(v, torch.Tensor)]
    assert sum(t.numel() for t in tensors) <= 2 * 5 * 5  # only the running product


def test_per_head_equals_mean_when_heads_are_equal(close):
    gen = torch.Generator().manual_seed(8)
    layers = [torch.softmax(torch.randn(2, 1, 5, 5, generator=gen), -1).expand(2, 4, 5, 5)
              for _ in range(3)]
    per_head = rollout(layers, per_head=True)
    assert per_head.shape == (2, 4, 5, 5)
    for h in range(4):
        close(per_head[:, h], rollout(layers))


def test_per_head_rolls_each_head_with_itself(close):
    layers = random_layers(9)
    per_head = rollout(layers, per_head=True, rows=[1])
    for h in range(3):
        close(per_head[:, h], rollout([a[:, h] for a in layers], rows=[1]))


def test_gradient_weighting_per_layer_order(close):
    layers = random_layers(10)
    gen = torch.Generator().manual_seed(10)
    grads = [torch.randn(a.shape, generator=gen) for a in layers]
    fused = [(g * a).clamp(min=0).mean(1) for a, g in zip(layers, grads)]
    close(rollout(layers, grads=grads), rollout(fused))
    # grads zipped to the wrong layers give a different answer
    assert not torch.allclose(rollout(layers, grads=grads[::-1]), rollout(fused))


def test_half_precision_is_upcast(close):
    layers = random_layers(11, dtype=torch.float16)
    out = rollout(layers)
    assert out.dtype == torch.float32
    close(out, rollout([a.float() for a in layers]))


# ---------------------------------------------------------------- properties


layer_sets = st.builds(
    lambda seed, batch, heads, n, depth: random_layers(seed, batch=batch, heads=heads,
                                                       n=n, layers=depth),
    st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 3), st.integers(2, 7),
    st.integers(1, 4),
)
option_sets = st.fixed_dictionaries({
    "head_fusion": st.sampled_from(["mean", "max", "min"]),
    "residual": st.floats(0.05, 1.0),
    "top_k": st.one_of(st.none(), st.integers(1, 4)),
    "prune_threshold": st.one_of(st.none(), st.floats(0.0, 0.5)),
})


@settings(max_examples=30, deadline=None)
@given(layers=layer_sets, options=option_sets, use_rows=st.booleans())
def test_rows_are_distributions(layers, options, use_rows, close):
    out = rollout(layers, rows=[0] if use_rows else None, **options)
    close(out.sum(-1), torch.ones(out.shape[:-1]), 1e-5)
    assert (out >= 0).all() and (out <= 1 + 1e-6).all()


@settings(max_examples=30, deadline=None)
@given(layers=layer_sets, options=option_sets, seed=st.integers(0, 1000))
def test_batch_order_does_not_matter(layers, options, seed, close):
    batch = layers[0].shape[0]
    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    out = rollout(layers, **options)
    close(rollout([a[perm] for a in layers], **options), out[perm])


# --------------------------------------------------------------------- errors


def test_input_errors_name_layer_and_problem():
    good = random_layers(12, batch=1, heads=2, n=4, layers=2)
    nan = good[1].clone()
    nan[0, 0, 0, 0] = float("nan")
    neg = good[1].clone()
    neg[0, 0, 0, 0] = -0.1
    cases = [
        ([good[0], nan], {}, r"layer 1: contains NaN or inf"),
        ([good[0], good[1] * float("inf")], {}, r"layer 1: contains NaN or inf"),
        ([good[0], neg], {}, r"layer 1: negative attention weights"),
        # the rows-only path sees NaN/inf in its row sums, skipped layers included;
        # negatives on request (check_values="all")
        ([good[0], nan], {"rows": [0]}, r"layer 1: contains NaN or inf"),
        ([good[0], good[1] * float("inf")], {"rows": [0]}, r"layer 1: contains NaN or inf"),
        ([good[0], neg], {"rows": [0], "check_values": "all"},
         r"layer 1: negative attention weights"),
        ([good[0], neg], {"rows": [0], "head_fusion": torch.ones(2),
                          "check_values": "all"}, r"layer 1: negative attention weights"),
        ([nan, good[1]], {"rows": [0], "start_layer": 1}, r"layer 0: contains NaN"),
        (good, {"check_values": "some"}, r"check_values must be None, 'all' or 'finite'"),
        ([good[0], torch.rand(4, 4)], {}, r"layer 1: wrong rank"),
        ([good[0], torch.rand(1, 2, 5, 5)], {}, r"layer 1: mismatched N"),
        ([good[0], torch.rand(2, 2, 4, 4)], {}, r"layer 1: mismatched batch"),
        ([torch.rand(1, 2, 4, 3)], {}, r"layer 0: self-attention must be square"),
        ([], {}, r"attentions is empty"),
        (good, {"rows": [4]}, r"rows out of range"),
        (good, {"rows": [-1]}, r"rows out of range"),
        (good, {"rows": torch.tensor([[0], [1]])}, r"rows: \[batch, R\] tensor has batch 2"),
        (good, {"head_fusion": torch.ones(3)}, r"layer 0: head weights have length 3"),
        (good, {"head_fusion": "median"}, r"head_fusion must be"),
        (good, {"residual": 1.5}, r"residual must be in \[0, 1\]"),
        (good, {"residual": -0.1}, r"residual must be in \[0, 1\]"),
        (good, {"top_k": 0}, r"top_k must be an integer >= 1"),
        (good, {"discard_ratio": 1.0}, r"discard_ratio must be in \[0, 1\)"),
        (good, {"discard_ratio": -0.5}, r"discard_ratio must be in \[0, 1\)"),
        (good, {"start_layer": 2}, r"start_layer=2 out of range for 2 layers"),
        (good, {"grads": [torch.ones(1, 2, 4, 4)]}, r"grads has 1 entries but there are 2"),
        (good, {"grads": [None, torch.ones(1, 2, 4, 3)]}, r"layer 1: wrong rank|layer 1: grad"),
        ([good[0], good[1].mean(1)], {"per_head": True},
         r"layer 1: per_head=True needs \[batch, head, query, key\]"),
    ]
    for layers, options, message in cases:
        with pytest.raises(ValueError, match=message):
            rollout(layers, **options)


def test_rows_only_scans_every_row_block(monkeypatch, close):
    from groundroll.rollout import product

    monkeypatch.setattr(product, "_ROW_BLOCK_BYTES", 64)  # one row per block
    layers = random_layers(13, batch=1, heads=2, n=6, layers=2)
    close(rollout(layers, rows=[0]), rollout(layers)[:, :1])
    bad = layers[0].clone()
    bad[0, 1, 5, 2] = -0.5  # the last block of the last head
    with pytest.raises(ValueError, match=r"layer 0: negative attention weights"):
        rollout([bad, layers[1]], rows=[0], check_values="all")


def test_check_values_default_is_what_each_path_reads_anyway():
    layers = random_layers(14, batch=1, heads=2, n=5, layers=2)
    neg = layers[1].clone()
    neg[0, 0, 3, 1] = -0.05
    # full product: every check by default, NaN/inf only with "finite"
    with pytest.raises(ValueError, match=r"layer 1: negative attention weights"):
        rollout([layers[0], neg])
    full = rollout([layers[0], neg], check_values="finite")
    # rows-only mean fusion: negatives pass unless asked for, and the rows are those
    # of the full product of the same (unchecked) weights
    torch.testing.assert_close(rollout([layers[0], neg], rows=[0, 3]), full[:, [0, 3]],
                               atol=1e-6, rtol=0)
    # the gradient-weighted and pruned rows-only paths keep checking negatives
    with pytest.raises(ValueError, match=r"layer 1: negative attention weights"):
        rollout([layers[0], neg], rows=[0], grads=[torch.ones_like(layers[0])] * 2)
    with pytest.raises(ValueError, match=r"layer 1: negative attention weights"):
        rollout([layers[0], neg], rows=[0], top_k=3)


def test_rows_only_flat_product_matches_a_hand_worked_layer():
    # one layer, two heads, N = 2, residual 0.5, head weights 3 : 1
    a = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]], [[1.0, 0.0], [0.0, 1.0]]]])
    fused = 0.75 * a[0, 0] + 0.25 * a[0, 1]          # [[0.4, 0.6], [0.45, 0.55]]
    corrected = 0.5 * fused + 0.5 * torch.eye(2)      # rows sum to 1 already
    want = corrected[1]                               # [0.225, 0.775]
    got = rollout([a], rows=[1], head_fusion=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(got[0, 0], want)
    torch.testing.assert_close(got[0, 0], torch.tensor([0.225, 0.775]))
    # rows that do not sum to one are renormalised after the residual
    b = a * torch.tensor([2.0, 1.0]).view(1, 1, 2, 1)   # row 0 of each head doubled
    fused_b = 0.75 * b[0, 0] + 0.25 * b[0, 1]
    mixed = 0.5 * fused_b + 0.5 * torch.eye(2)
    want_b = (mixed / mixed.sum(-1, keepdim=True))[0]
    got_b = rollout([b], rows=[0], head_fusion=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(got_b[0, 0], want_b)


@pytest.mark.parametrize("block_bytes", [None, 1])
def test_rows_only_mean_in_fused_row_blocks_matches_full_product(block_bytes, monkeypatch,
                                                                  close):
    # The flat path sums the heads one block of rows at a time; with one row per block
    # (block_bytes=1) every block boundary is crossed. Rows, autograd through the
    # weights and through learnable head weights, and NaN in a middle block.
    from groundroll.rollout import product

    if block_bytes is not None:
        monkeypatch.setattr(product, "_FUSED_BLOCK_BYTES", block_bytes)
    layers = random_layers(11, batch=2, heads=4, n=6, layers=4, dtype=torch.float64)
    rows = torch.tensor([[0, 3], [5, 1]])
    full = rollout(layers)
    want = torch.stack([full[b, rows[b]] for b in range(2)])
    close(rollout(layers, rows=rows), want)
    head_weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    weighted_full = rollout(layers, head_fusion=head_weights)
    weighted = rollout(layers, rows=rows, head_fusion=head_weights)
    close(weighted, torch.stack([weighted_full[b, rows[b]] for b in range(2)]))
    with torch.inference_mode(False):
        tracked = [a.clone().requires_grad_() for a in layers]
        learn = head_weights.clone().requires_grad_()
        out = rollout(tracked, rows=rows, head_fusion=learn)
        (out * torch.arange(out.numel()).view(out.shape)).sum().backward()  # rows sum to 1
        ref = [a.clone().requires_grad_() for a in layers]
        learn_ref = head_weights.clone().requires_grad_()
        want_full = rollout(ref, head_fusion=learn_ref)
        want_rows = torch.stack([want_full[b, rows[b]] for b in range(2)])
        (want_rows * torch.arange(out.numel()).view(out.shape)).sum().backward()
    close(out.detach(), weighted)
    for t, r in zip(tracked, ref):
        close(t.grad, r.grad)
    close(learn.grad, learn_ref.grad)
    bad = layers[1].clone()
    bad[1, 2, 3, 4] = float("nan")                  # batch 1, a middle row, head 2
    with pytest.raises(ValueError, match=r"layer 1: contains NaN"):
        rollout([layers[0], bad, *layers[2:]], rows=rows)


def test_rows_only_mean_with_gradients_through_some_layers_only(close):
    # Only the top layer tracks gradients: the vectors reaching the lower layers carry
    # them, so those layers' fused blocks must not be a buffer the next block reuses.
    layers = random_layers(12, batch=1, heads=3, n=6, layers=3, dtype=torch.float64)
    with torch.inference_mode(False):
        top = layers[2].clone().requires_grad_()
        weights = torch.arange(6, dtype=torch.float64)           # rows sum to 1
        out = rollout([layers[0], layers[1], top], rows=[0])
        (out * weights).sum().backward()
        ref = layers[2].clone().requires_grad_()
        (rollout([layers[0], layers[1], ref])[:, :1] * weights).sum().backward()
    assert ref.grad.abs().max() > 1e-3
    close(top.grad, ref.grad)


def test_accumulator_errors_name_layer_and_problem():
    acc = RolloutAccumulator(rows=[7])
    with pytest.raises(ValueError, match=r"rows out of range"):
        acc.add(torch.rand(1, 2, 4, 4))
    acc = RolloutAccumulator()
    with pytest.raises(ValueError, match=r"no layers to roll out"):
        acc.result()
    acc.add(torch.softmax(torch.rand(1, 2, 4, 4), -1))
    with pytest.raises(ValueError, match=r"layer 1: mismatched N"):
        acc.add(torch.softmax(torch.rand(1, 2, 5, 5), -1))
    with pytest.raises(ValueError, match=r"layer 1: contains NaN"):
        acc.add(torch.full((1, 2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"top_k must be"):
        RolloutAccumulator(top_k=0)


def test_building_block_errors():
    with pytest.raises(ValueError, match=r"attention: head weights have length 3"):
        fuse_heads(TWO_HEADS, torch.ones(3))
    with pytest.raises(ValueError, match=r"attention: self-attention must be square"):
        residual_correct(torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"keep out of range"):
        prune(PRUNE_IN, top_k=1, keep=[3])
    with pytest.raises(ValueError, match=r"value_norms: shape \(1, 1, 3\) does not match"):
        value_weighted(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 3))


def test_all_option_combinations_run_with_rows():
    layers = random_layers(13, batch=1)
    for fusion, pruning in itertools.product(["mean", "max", "min"],
                                             [{}, {"top_k": 1}, {"prune_threshold": 0.5}]):
        out = rollout(layers, rows=[0], head_fusion=fusion, **pruning)
        assert torch.isfinite(out).all() and out[0, 0, 0] > 0


def test_cross_update_hand_case(close, tol):
    # r = 0.5: R_ts = .5 C K, R_tt = .5 R_tt; a second block mixes the old R_ts back in
    c = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    keys = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    r_ts, r_tt = rollout_cross_update(torch.eye(2), None, c, keys)
    close(r_ts, [[0.375, 0.125], [0.1875, 0.3125]], tol.HAND)
    close(r_tt, 0.5 * torch.eye(2), tol.HAND)
    r_ts2, r_tt2 = rollout_cross_update(r_tt, r_ts, c, keys, residual=0.25)
    close(r_ts2, 0.25 * r_ts + 0.75 * (c @ keys), tol.HAND)
    close(r_ts2.sum(-1) + r_tt2.sum(-1), torch.ones(2), tol.HAND)
    with pytest.raises(ValueError, match=r"keys: shape \(3, 2\) must have K=2 rows"):
        rollout_cross_update(torch.eye(2), None, c, torch.ones(3, 2))

