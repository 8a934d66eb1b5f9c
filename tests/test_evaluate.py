import numpy as np
import pytest

from groundroll import evaluate as E


def test_confusion_and_iou_hand():
    pred = np.array([[0, 1], [1, 1]])
    gt = np.array([[0, 1], [0, 1]])
    conf = E.confusion_matrix(pred, gt, 3)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    iou = E.iou_per_class(conf)
    # class 0: tp 1 / (col 1 + row 2 - 1) = 1/2; class 1: 2 / (3 + 2 - 2) = 2/3; class 2: absent
    np.testing.assert_allclose(iou[:2], [0.5, 2 / 3])
    assert np.isnan(iou[2])
    assert E.miou([pred], [gt], n_classes=3) == pytest.approx((0.5 + 2 / 3) / 2)


def test_miou_is_dataset_level_and_ignores():
    preds = [np.array([[1, 1]]), np.array([[0, 0]])]
    gts = [np.array([[1, 1]]), np.array([[0, 1]])]
    # summed confusion: [[1, 0], [1, 2]] -> IoU 1/2 and 2/3 (per-image mean would differ)
    assert E.miou(preds, gts, n_classes=2) == pytest.approx(7 / 12)
    gts_ignored = [np.array([[1, 1]]), np.array([[0, 255]])]
    assert E.miou(preds, gts_ignored, n_classes=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in number"):
        E.miou(preds, gts[:1], n_classes=2)
    with pytest.raises(ValueError, match="outside"):
        E.confusion_matrix([[3]], [[0]], 2)
    with pytest.raises(ValueError, match="shape"):
        E.confusion_matrix([[0, 0]], [[0]], 2)


def _item(masks, labels, hw=(2, 3)):
    return {"image": np.zeros(hw + (3,), np.uint8), "masks": np.array(masks, bool), "labels": labels}


def test_miou_dataset_fixed_vocabulary():
    items = [
        _item([[[1, 1, 0], [0, 0, 0]]], ["cat"]),
        _item([[[0, 0, 0], [0, 1, 1]]], ["dog"]),
    ]
    seen = []

    def predict(image, names):
        seen.append(list(names))
        assert image.shape == (2, 3, 3) and image.dtype == np.uint8
        return np.array([[1, 1, 1], [0, 0, 0]])  # always "cat" on the top row

    s = E.miou_dataset(items, predict, class_names=["cat", "dog", "bird"], progress=False)
    assert seen == [["cat", "dog", "bird"]] * 2
    assert s.class_names == ["background", "cat", "dog", "bird"] and s.n_images == 2
    # background: tp 3 (img 1 bottom row) + 1 (img 2 pixel (1, 0)) = 4, gt 4 + 4 = 8, pred 6
    # -> 4 / (8 + 6 - 4) = 0.4
    # cat: tp 2, gt 2, pred 6 -> 2/6; dog: tp 0 -> 0; bird absent -> NaN, excluded
    assert s.iou["background"] == pytest.approx(0.4)
    assert s.iou["cat"] == pytest.approx(1 / 3)
    assert s.iou["dog"] == 0.0 and np.isnan(s.iou["bird"])
    assert s.miou == pytest.approx((0.4 + 1 / 3 + 0) / 3)
    assert s.pixel_accuracy == pytest.approx(6 / 12)
    s2 = E.miou_dataset(items, predict, class_names=["cat", "dog", "bird"], include_background=False,
                        progress=False, limit=1)
    assert s2.n_images == 1 and s2.miou == pytest.approx(2 / 3)


def test_miou_dataset_per_image_prompts():
    items = [_item([[[1, 1, 0], [0, 0, 0]]], ["dog"]), _item(np.zeros((0, 2, 3)), [])]

    def predict(image, names):
        out = np.zeros(image.shape[:2], int)
        if names == ["dog"]:
            out[0, :2] = 1  # label 1 = names[0] = "dog" (global class 1)
        return out

    s = E.miou_dataset(items, predict, progress=False)
    assert s.class_names == ["background", "dog"] and s.miou == 1.0
    with pytest.raises(ValueError, match="prediction"):
        E.miou_dataset(items, lambda im, n: np.zeros((1, 1), int), progress=False)


def test_miou_dataset_hf_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"image": np.zeros((2, 3, 3), np.uint8).tolist(), "masks": [[[True, False, False], [False] * 3]],
          "labels": ["cat"]}]
    )
    s = E.miou_dataset(ds, lambda im, names: np.array([[1, 0, 0], [0, 0, 0]]), class_names=["cat"],
                       progress=False)
    assert s.miou == 1.0


def test_aer_hand():
    sure = [{(0, 0), (1, 1)}]
    possible = [{(0, 0), (1, 1), (1, 2)}]
    pred = [{(0, 0), (1, 2), (2, 2)}]
    s = E.aer(sure, possible, pred)
    # |A|=3, |S|=2, |A∩S|=1, |A∩P|=2
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(4 / 7)
    assert s.aer == pytest.approx(1 - 3 / 5)
    assert (s.n_pred, s.n_sure, s.n_possible) == (3, 2, 3)


def test_aer_corpus_level_and_sure_in_possible():
    sure = [{(0, 0), (1, 1)}, {(0, 0)}]
    possible = [{(1, 2)}, set()]  # sure links missing from P are added
    pred = [{(0, 0), (1, 2), (2, 2)}, {(0, 0)}]
    s = E.aer(sure, possible, pred)
    # totals: |A|=4, |S|=3, |A∩S|=2, |A∩P|=3 -> AER 1 - 5/7 (per-sentence mean would be 0.2)
    assert s.aer == pytest.approx(2 / 7)
    assert s.precision == pytest.approx(3 / 4) and s.recall == pytest.approx(2 / 3)
    perfect = E.aer(sure, None, sure)
    assert perfect.aer == 0.0 and perfect.precision == perfect.recall == 1.0
    empty = E.aer(sure, None, [set(), set()])
    assert empty.precision == 0.0 and empty.aer == 1.0
    with pytest.raises(ValueError, match="lengths"):
        E.aer(sure, None, pred[:1])
    with pytest.raises(ValueError, match="undefined"):
        E.aer([set()], None, [set()])


def _toy():
    image = np.ones((10, 10, 1))
    weights = np.zeros((10, 10))
    weights.ravel()[::10] = 0.1  # 10 important pixels, total weight 1
    calls = []

    def score_fn(batch):
        calls.append(batch.shape)
        return (batch[..., 0] * weights).sum(axis=(1, 2))

    return image, weights, score_fn, calls


def test_deletion_insertion_known_auc():
    image, weights, score_fn, calls = _toy()
    d = E.deletion_curve(score_fn, image, weights, steps=10, batch_size=3)
    # all 10 important pixels go in the first step: scores [1, 0, ..., 0] -> AUC 0.1 * 0.5
    np.testing.assert_allclose(d.scores, [1] + [0] * 10, atol=1e-6)
    assert d.auc == pytest.approx(0.05)
    np.testing.assert_allclose(d.fractions, np.linspace(0, 1, 11))
    assert [c[0] for c in calls] == [3, 3, 3, 2] and calls[0][1:] == (10, 10, 1)
    i = E.insertion_curve(score_fn, image, weights, steps=10, baseline=0.0)
    assert i.auc == pytest.approx(0.95)
    # the worst heatmap removes the important pixels last: 1 until 90 %, then 0
    worst = E.deletion_curve(score_fn, image, -weights, steps=10)
    assert worst.auc == pytest.approx(0.95)
    uniform = E.deletion_curve(lambda b: b.mean(axis=(1, 2, 3)), image, np.zeros((10, 10)), steps=5)
    assert uniform.auc == pytest.approx(0.5)


def test_curve_baselines_and_errors():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 3))
    heat = rng.random((8, 8))
    for baseline in ("mean", "blur", 0.5, np.zeros((8, 8, 3))):
        c = E.insertion_curve(lambda b: b.mean(axis=(1, 2, 3)), image, heat, steps=4, baseline=baseline)
        assert c.scores.shape == (5,)
        assert c.scores[-1] == pytest.approx(image.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="resize"):
        E.deletion_curve(lambda b: b.sum(axis=(1, 2, 3)), image, heat[:4])
    with pytest.raises(ValueError, match="baseline"):
        E.deletion_curve(lambda b: b.sum(axis=(1, 2, 3)), image, heat, baseline="zeros")
    with pytest.raises(ValueError, match="scores"):
        E.deletion_curve(lambda b: np.zeros(1), image, heat, steps=3)
