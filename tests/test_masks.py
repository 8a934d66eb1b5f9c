import numpy as np
import pytest

from groundroll import masks as M


def two_region_image(h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    edge = 13  # not on a superpixel grid line
    img[:, edge:] = 1.0
    img += rng.normal(0, 0.02, img.shape)
    truth = np.zeros((2, h, w))
    truth[0, :, :edge] = 1
    truth[1, :, edge:] = 1
    noisy = truth + rng.normal(0, 0.4, truth.shape)
    return img, truth, noisy


def test_resize_maps_shape_dtype_range():
    maps = np.random.default_rng(0).random((3, 7, 5)).astype(np.float32)
    out = M.resize_maps(maps, (20, 11))
    assert out.shape == (3, 20, 11) and out.dtype == np.float32
    assert out.min() >= maps.min() - 1e-6 and out.max() <= maps.max() + 1e-6
    assert M.resize_maps(maps[0], (4, 4)).shape == (4, 4)
    # nearest keeps exact values
    assert set(np.unique(M.resize_maps(np.array([[0.0, 2.0]]), (3, 6), order=0))) == {0.0, 2.0}


def test_fit_size():
    assert M.fit_size((480, 640), short_side=224) == (224, 299)
    assert M.fit_size((480, 640), long_side=448, multiple=16) == (336, 448)
    with pytest.raises(ValueError):
        M.fit_size((4, 4))


def test_letterbox_geometry_pad_and_crop():
    g = M.letterbox_geometry((480, 640), (224, 224))
    assert g.resized_hw == (168, 224) and g.offset == (28, 0)
    c = M.letterbox_geometry((480, 640), (224, 224), mode="crop")
    assert c.resized_hw == (224, 299) and c.offset == (0, -38)


def test_letterbox_roundtrip():
    H, W = 60, 90
    y, x = np.mgrid[0:H, 0:W]
    smooth = (x / W + 0.5 * y / H).astype(np.float64)
    g = M.letterbox_geometry((H, W), (48, 48))
    model_in = M.letterbox_image(smooth, g)
    assert model_in.shape == (48, 48)
    assert np.all(model_in[: g.offset[0]] == 0)  # padding rows
    back = M.unletterbox(model_in[None], g)
    assert back.shape == (1, H, W)
    assert np.abs(back[0] - smooth).max() < 0.03
    # A patch grid: left half of the image is 1 in model space -> comes back as the left half.
    grid = np.zeros((12, 12))
    grid[:, :6] = 1
    out = M.unletterbox(grid, g, order=0)
    assert out.shape == (H, W)
    assert np.all(out[:, : W // 2 - 1] == 1) and np.all(out[:, W // 2 + 1 :] == 0)


def test_unletterbox_constant_and_crop_fill():
    g = M.letterbox_geometry((30, 50), (16, 16), mode="crop")
    out = M.unletterbox(np.full((2, 4, 4), 0.5, dtype=np.float32), g, fill=-1.0)
    assert out.dtype == np.float32
    # The crop removes columns on both sides: those pixels get the fill value.
    assert np.all(out[:, :, 0] == -1) and np.all(out[:, :, -1] == -1)
    assert np.all(out[:, :, 25] == 0.5)


def test_letterbox_image_uint8():
    img = np.full((40, 20, 3), 200, dtype=np.uint8)
    g = M.letterbox_geometry((40, 20), (10, 10))
    out = M.letterbox_image(img, g, fill=0)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out[:, g.offset[1] : g.offset[1] + g.resized_hw[1]].min() == 200
    assert out[:, 0].max() == 0


def test_normalize_maps(close):
    maps = np.array([[[1.0, 3.0, 2.0]], [[2.0, 2.0, 2.0]], [[-1.0, 0.0, -2.0]]])
    mm = M.normalize_maps(maps)
    close(mm[0, 0], [0, 1, 0.5])
    assert np.all(mm[1] == 0)
    close(mm[2, 0], [0.5, 1, 0])
    mx = M.normalize_maps(maps, how="max")
    close(mx[0, 0], [1 / 3, 1, 2 / 3])
    assert np.all(mx[2] == 0)
    np.testing.assert_array_equal(M.normalize_maps(maps, how="none"), maps)
    with pytest.raises(ValueError):
        M.normalize_maps(maps, how="z")


def test_softmax_maps(close):
    maps = np.array([[[0.0]], [[np.log(3.0)]]])
    p = M.softmax_maps(maps)
    close(p[:, 0, 0], [0.25, 0.75])
    rng = np.random.default_rng(0)
    big = rng.normal(size=(4, 5, 6))
    p = M.softmax_maps(big, logit_scale=100.0)
    assert np.all(np.isfinite(p))
    close(p.sum(axis=0), 1.0)
    # logit_scale sharpens towards the argmax
    assert np.all(p.argmax(0) == big.argmax(0))
    p_last = M.softmax_maps(np.moveaxis(big, 0, -1), axis=-1)
    close(np.moveaxis(p_last, -1, 0), M.softmax_maps(big))


def test_label_map_mask_threshold_and_background():
    probs = np.array(
        [
            [[0.7, 0.1, 0.3]],
            [[0.2, 0.5, 0.3]],
            [[0.1, 0.4, 0.4]],  # background prompt
        ]
    )
    np.testing.assert_array_equal(M.label_map(probs), [[1, 2, 3]])
    np.testing.assert_array_equal(M.label_map(probs, background=[2]), [[1, 2, 0]])
    # mask_threshold is exclusive below: 0.5 stays, 0.3 and 0.4 drop
    np.testing.assert_array_equal(M.label_map(probs, mask_threshold=0.5), [[1, 2, 0]])
    np.testing.assert_array_equal(M.label_map(probs, mask_threshold=0.6), [[1, 0, 0]])
    # mask_threshold compares the best foreground prompt: pixel 2's best foreground is 0.3
    np.testing.assert_array_equal(M.label_map(probs, background=[2], mask_threshold=0.35), [[1, 2, 0]])
    assert M.label_map(probs).dtype == np.int32
    with pytest.raises(IndexError):
        M.label_map(probs, background=[3])


def test_masks_from_labels():
    labels = np.array([[0, 1], [2, 2]])
    m = M.masks_from_labels(labels, 3)
    assert m.shape == (3, 2, 2) and m.dtype == bool
    np.testing.assert_array_equal(m[1], [[False, False], [True, True]])
    assert not m[2].any()


@pytest.mark.parametrize("refine", ["slic", "superpixels", "pamr"])
def test_refinement_improves_noisy_two_region_map(refine):
    img, truth, noisy = two_region_image()
    if refine == "slic":
        out = M.slic_pool(noisy, img, n_segments=16, compactness=10.0)
    elif refine == "superpixels":
        out = M.superpixel_pool(noisy, img)
    else:
        out = M.pamr(noisy, img, iterations=10)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    err_before = np.abs(noisy - truth).mean()
    err_after = np.abs(out - truth).mean()
    assert err_after < 0.5 * err_before
    assert (out.argmax(0) == truth.argmax(0)).mean() > (noisy.argmax(0) == truth.argmax(0)).mean()


def test_pamr_is_convex_and_keeps_constants(close):
    img, _, noisy = two_region_image(16, 16)
    out = M.pamr(noisy, img, iterations=3, dilations=(1, 2, 4))
    assert out.min() >= noisy.min() - 1e-9 and out.max() <= noisy.max() + 1e-9
    const = np.full((1, 16, 16), 0.3)
    close(M.pamr(const, img), const)
    with pytest.raises(ValueError, match="resize the maps"):
        M.pamr(noisy, img[:8])


def test_remove_small_masks_and_labels():
    m = np.zeros((8, 8), bool)
    m[0, 0] = True  # 1 pixel
    m[2:4, 2:5] = True  # 6 pixels
    m[7, 7] = m[6, 6] = True  # diagonal pair: two 1-pixel 4-components, one 8-component
    out = M.remove_small(m, min_size=2)
    assert out.sum() == 6 and out[2:4, 2:5].all()
    out8 = M.remove_small(m, min_size=2, connectivity=2)
    assert out8.sum() == 8
    assert M.remove_small(np.stack([m, m]), min_size=6).sum() == 12
    labels = np.zeros((5, 5), np.int32)
    labels[0, 0] = 1
    labels[1:4, 1:4] = 2
    labels[4, 4] = 2
    out = M.remove_small(labels, min_size=2)
    assert out.dtype == np.int32
    assert out[0, 0] == 0 and out[4, 4] == 0 and (out == 2).sum() == 9


def test_fill_holes_masks_and_labels():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False  # 1-pixel hole
    m[2, 2] = False  # another (separate) 1-pixel hole
    assert M.fill_holes(m)[1:6, 1:6].all()
    assert M.fill_holes(m, max_size=0).sum() == m.sum()
    big = np.zeros((7, 7), bool)
    big[0:7, 0:7] = True
    big[2:5, 2:5] = False  # 9-pixel hole
    assert M.fill_holes(big, max_size=8).sum() == big.sum()
    assert M.fill_holes(big, max_size=9).all()
    labels = np.zeros((5, 5), np.int32)
    labels[:, :] = 1
    labels[2, 2] = 0
    labels[1, 2] = 0
    labels[2, 1] = 2  # another label inside: never overwritten
    out = M.fill_holes(labels)
    assert out[2, 2] == 1 and out[1, 2] == 1 and out[2, 1] == 2


def test_ensemble_and_average_groups(close):
    texts, groups = M.ensemble_prompts(["cat", "dog"], ["a {}.", "the {}"])
    assert texts == ["a cat.", "the cat", "a dog.", "the dog"]
    np.testing.assert_array_equal(groups, [0, 0, 1, 1])
    texts, groups = M.ensemble_prompts(["x"])
    assert len(texts) == len(M.DEFAULT_TEMPLATES) and set(groups) == {0}
    with pytest.raises(ValueError):
        M.ensemble_prompts(["x"], ["no placeholder"])
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    close(M.average_groups(emb, [0, 0, 1]), [[0.5, 1.0], [3.0, 4.0]])
    normed = M.average_groups(emb, [0, 0, 1], normalize=True)
    close(normed, [[np.sqrt(0.5), np.sqrt(0.5)], [0.6, 0.8]])
    maps = np.arange(12, dtype=float).reshape(3, 2, 2)
    assert M.average_groups(maps, [1, 1, 0]).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="empty"):
        M.average_groups(emb, [0, 0, 2])


def test_sliding_windows_cover():
    for hw, window, stride in [((100, 70), 32, 24), ((10, 10), 16, 8), ((64, 64), (32, 16), (32, 16))]:
        wins = M.sliding_windows(hw, window=window, stride=stride)
        cover = np.zeros(hw, int)
        for y0, x0, y1, x1 in wins:
            assert 0 <= y0 < y1 <= hw[0] and 0 <= x0 < x1 <= hw[1]
            cover[y0:y1, x0:x1] += 1
        assert cover.min() >= 1
    assert M.sliding_windows((64, 64), window=(32, 16), stride=(32, 16))[:2] == [
        (0, 0, 32, 16),
        (0, 16, 32, 32),
    ]


def test_stitch_constant_exact_and_large_image(close):
    wins = M.sliding_windows((100, 70), window=32, stride=20)
    out = M.stitch((np.full((2, 4, 4), 0.25) for _ in wins), wins, (100, 70))
    assert out.shape == (2, 100, 70) and out.dtype == np.float32
    assert np.all(out == 0.25)
    # A ramp sampled per window stitches back to the ramp (linear maps are exact).
    H, W = 96, 80
    wins = M.sliding_windows((H, W), window=32, stride=16)
    xx = np.arange(W, dtype=np.float64)
    ramp = np.broadcast_to(xx, (H, W))
    out = M.stitch((ramp[None, y0:y1, x0:x1] for y0, x0, y1, x1 in wins), wins, (H, W))
    close(out[0], ramp, atol=1e-4)
    # A large image (3000 x 2000, 12 overlapping windows) from small per-window maps.
    wins = M.sliding_windows((3000, 2000), window=1000, stride=800)
    out = M.stitch((np.ones((1, 14, 14), np.float32) for _ in wins), wins, (3000, 2000))
    assert out.shape == (1, 3000, 2000) and out.min() == 1 and out.max() == 1
    with pytest.raises(ValueError):
        M.stitch([np.ones((1, 2, 2))], wins, (3000, 2000))


def test_palette():
    p = M.palette(300)
    assert p.shape == (300, 3) and p.dtype == np.uint8
    assert (p[0] == 0).all()
    assert len({tuple(c) for c in p}) == 300
    np.testing.assert_array_equal(p[1:4], [[128, 0, 0], [0, 128, 0], [128, 128, 0]])


def test_superpixel_pool_is_the_mean_of_per_partition_means():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 6, 7))
    parts = [rng.integers(0, 4, (6, 7)), rng.integers(0, 9, (6, 7))]
    want = np.zeros_like(maps)
    for seg in parts:                                  # naive loop over superpixels
        for p in range(2):
            for label in np.unique(seg):
                want[p][seg == label] += maps[p][seg == label].mean() / len(parts)
    np.testing.assert_allclose(M.superpixel_pool(maps, partitions=parts), want, atol=1e-12)


def test_superpixel_partitions_follow_a_colour_edge_and_cap_the_working_size():
    img = np.zeros((40, 1200, 3), np.uint8)
    img[:, 600:] = (220, 30, 30)
    parts = M.superpixel_partitions(img)
    assert len(parts) == len(M.SUPERPIXEL_SCALES) + len(M.SUPERPIXEL_SIZES)
    for seg in parts:
        assert seg.shape == (40, 1200)
        # No superpixel straddles the edge (partitions ran at 512 px, then resized back).
        assert not set(np.unique(seg[:, :598])) & set(np.unique(seg[:, 602:]))
    with pytest.raises(ValueError, match="image or its partitions"):
        M.superpixel_pool(np.zeros((1, 4, 4)))


def test_superpixel_partitions_run_felzenszwalb_at_the_graph_side_and_short_slic():
    from PIL import Image
    from skimage.segmentation import felzenszwalb, slic

    rng = np.random.default_rng(0)
    img = (rng.random((60, 80, 3)) * 60).astype(np.uint8)
    img[:, 40:] += 150
    parts = M.superpixel_partitions(img, scales=(100,), sizes=(200,), graph_side=40,
                                    slic_iterations=2)
    # Felzenszwalb on the image halved (its 20-pixel minimum region a quarter), each
    # label then covering 2 x 2 pixels; SLIC at full size, two iterations.
    half = np.asarray(Image.fromarray(img).resize((40, 30), Image.BILINEAR))
    graph = felzenszwalb(half, scale=100.0, sigma=0.8, min_size=5)
    np.testing.assert_array_equal(parts[0], graph.repeat(2, 0).repeat(2, 1))
    short = slic(img, n_segments=60 * 80 // 200, compactness=10.0, max_num_iter=2,
                 start_label=0)
    np.testing.assert_array_equal(parts[1], short)
    assert not np.array_equal(short, slic(img, n_segments=60 * 80 // 200,
                                          compactness=10.0, start_label=0))
