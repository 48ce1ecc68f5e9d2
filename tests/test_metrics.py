"""IoUAccumulator must reproduce mmsegmentation's IoUMetric: areas summed over the split,
ratios of sums, NaN classes skipped, ignore pixels dropped, percentages unrounded."""
import math
import warnings

import numpy as np
import pytest
import torch

from sfp.errors import DataError
from sfp.metrics import IoUAccumulator, SegmentationMetrics


def reference_metrics(pairs, num_classes, ignore_index=255):
    """Independent implementation: per-class Python loop over boolean masks."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    lab_area = np.zeros(num_classes)
    for pred, label in pairs:
        valid = label != ignore_index
        for c in range(num_classes):
            p = (pred == c) & valid
            g = (label == c) & valid
            inter[c] += np.logical_and(p, g).sum()
            union[c] += np.logical_or(p, g).sum()
            lab_area[c] += g.sum()
    ious = [inter[c] / union[c] if union[c] else math.nan for c in range(num_classes)]
    accs = [inter[c] / lab_area[c] if lab_area[c] else math.nan for c in range(num_classes)]
    present_iou = [v for v in ious if not math.isnan(v)]
    present_acc = [v for v in accs if not math.isnan(v)]
    return {
        "miou": 100 * sum(present_iou) / len(present_iou),
        "aacc": 100 * inter.sum() / lab_area.sum(),
        "macc": 100 * sum(present_acc) / len(present_acc),
        "per_class_iou": [100 * v for v in ious],
        "per_class_acc": [100 * v for v in accs],
        "n_pixels": int(lab_area.sum()),
    }


def assert_nan_equal(actual, expected, tol=1e-9):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if math.isnan(e):
            assert math.isnan(a)
        else:
            assert a == pytest.approx(e, abs=tol)


def assert_same_metrics(a, b):
    for name in ("miou", "aacc", "macc", "n_pixels", "n_images"):
        assert getattr(a, name) == getattr(b, name)
    assert_nan_equal(a.per_class_iou, b.per_class_iou, tol=0)
    assert_nan_equal(a.per_class_acc, b.per_class_acc, tol=0)


def random_split(rng, num_classes, n_images=6):
    pairs = []
    for _ in range(n_images):
        h, w = rng.integers(5, 40, size=2)
        label = rng.integers(0, num_classes, size=(h, w))
        label[rng.random((h, w)) < 0.15] = 255
        pred = np.where(rng.random((h, w)) < 0.6, label, rng.integers(0, num_classes, size=(h, w)))
        pred[pred == 255] = 0
        pairs.append((pred, label))
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_per_class_loop_over_random_images(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    pairs = random_split(rng, num_classes)
    acc = IoUAccumulator(num_classes)
    for pred, label in pairs:
        acc.update(torch.from_numpy(pred), torch.from_numpy(label))
    got = acc.compute()
    ref = reference_metrics(pairs, num_classes)
    assert got.miou == pytest.approx(ref["miou"], abs=1e-9)
    assert got.aacc == pytest.approx(ref["aacc"], abs=1e-9)
    assert got.macc == pytest.approx(ref["macc"], abs=1e-9)
    assert_nan_equal(got.per_class_iou, ref["per_class_iou"])
    assert_nan_equal(got.per_class_acc, ref["per_class_acc"])
    assert got.n_pixels == ref["n_pixels"]
    assert got.n_images == len(pairs)


def test_hand_computed_example():
    # (pred, label) over non-ignored pixels: (0,0) (0,1) (1,1) (1,1) (2,2); the last pixel is ignored
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    label = np.array([[0, 1, 1], [1, 2, 255]])
    acc = IoUAccumulator(3)
    acc.update(pred, label)
    assert acc.area_intersect.tolist() == [1, 2, 1]
    assert acc.area_pred.tolist() == [2, 2, 1]
    assert acc.area_label.tolist() == [1, 3, 1]
    assert acc.area_union.tolist() == [2, 3, 1]
    m = acc.compute()
    assert isinstance(m, SegmentationMetrics)
    assert m.per_class_iou == pytest.approx([50.0, 200 / 3, 100.0])
    assert m.miou == pytest.approx(100 * 13 / 18)  # (1/2 + 2/3 + 1) / 3
    assert m.aacc == pytest.approx(80.0)  # 4 of 5 labelled pixels
    assert m.per_class_acc == pytest.approx([100.0, 200 / 3, 100.0])
    assert m.macc == pytest.approx(100 * 8 / 9)
    assert m.n_pixels == 5


def test_state_is_int64_of_shape_num_classes():
    acc = IoUAccumulator(4)
    acc.update(np.zeros((2, 2), dtype=np.uint8), np.zeros((2, 2), dtype=np.uint8))
    for t in (acc.area_intersect, acc.area_union, acc.area_pred, acc.area_label):
        assert t.dtype == torch.int64 and t.shape == (4,)


def test_ignored_pixels_count_in_neither_prediction_nor_label():
    label = np.full((4, 4), 255)
    label[0, 0] = 1
    pred = np.full((4, 4), 2)  # wrong everywhere, but only one pixel is labelled
    pred[0, 0] = 1
    acc = IoUAccumulator(3)
    acc.update(pred, label)
    m = acc.compute()
    assert acc.area_pred.tolist() == [0, 1, 0]
    assert m.miou == 100.0 and m.aacc == 100.0 and m.n_pixels == 1
    assert math.isnan(m.per_class_iou[0]) and math.isnan(m.per_class_iou[2])


def test_custom_ignore_index():
    acc = IoUAccumulator(2, ignore_index=-1)
    acc.update(np.array([[0, 1]]), np.array([[0, -1]]))
    assert acc.compute().per_class_iou[0] == 100.0
    assert math.isnan(acc.compute().per_class_iou[1])


def test_absent_classes_are_nan_and_skipped_but_false_positives_count():
    pred = np.array([[0, 0, 1, 1]])
    label = np.array([[0, 0, 0, 0]])
    acc = IoUAccumulator(4)
    acc.update(pred, label)
    m = acc.compute()
    # class 1 is only predicted: IoU 0, counted; classes 2 and 3 occur nowhere: NaN, skipped
    assert m.per_class_iou[:2] == [50.0, 0.0]
    assert math.isnan(m.per_class_iou[2]) and math.isnan(m.per_class_iou[3])
    assert m.miou == 25.0
    # accuracy is NaN for every class without labelled pixels
    assert m.per_class_acc[0] == 50.0 and all(math.isnan(v) for v in m.per_class_acc[1:])
    assert m.macc == 50.0


def test_all_classes_nan_gives_nan_without_crash_or_warning():
    acc = IoUAccumulator(3)
    acc.update(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), 255))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = acc.compute()
    assert math.isnan(m.miou) and math.isnan(m.aacc) and math.isnan(m.macc)
    assert m.n_pixels == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(IoUAccumulator(3).compute().miou)


def test_split_sum_differs_from_mean_of_per_image_mious():
    img1 = (np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))  # per-image mIoU 1.0
    img2 = (np.array([[0, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # per-image (0 + 0.75) / 2 = 0.375
    per_image = []
    total = IoUAccumulator(2)
    for pred, label in (img1, img2):
        single = IoUAccumulator(2)
        single.update(pred, label)
        per_image.append(single.compute().miou)
        total.update(pred, label)
    assert np.mean(per_image) == pytest.approx(68.75)
    # split: class 0 has I=4, U=5; class 1 has I=3, U=4
    assert total.compute().miou == pytest.approx(100 * (0.8 + 0.75) / 2)


def test_merge_equals_one_accumulator_over_all_images():
    rng = np.random.default_rng(5)
    pairs = random_split(rng, 5, n_images=8)
    single = IoUAccumulator(5)
    a, b = IoUAccumulator(5), IoUAccumulator(5)
    for i, (pred, label) in enumerate(pairs):
        single.update(pred, label)
        (a if i % 3 else b).update(pred, label)
    a.merge(b)
    assert torch.equal(a.state_tensor(), single.state_tensor())
    assert a.n_images == single.n_images == 8
    assert_same_metrics(a.compute(), single.compute())


def test_merge_rejects_a_different_class_count():
    with pytest.raises(ValueError, match="3 classes"):
        IoUAccumulator(4).merge(IoUAccumulator(3))


def test_state_tensor_round_trip_and_sum_reduction():
    rng = np.random.default_rng(9)
    pairs = random_split(rng, 6, n_images=4)
    shards = [IoUAccumulator(6), IoUAccumulator(6)]
    single = IoUAccumulator(6)
    for i, (pred, label) in enumerate(pairs):
        shards[i % 2].update(pred, label)
        single.update(pred, label)
    state = shards[0].state_tensor()
    assert state.shape == (4, 6) and state.dtype == torch.int64
    reduced = state + shards[1].state_tensor()  # what all_reduce(SUM) computes
    rebuilt = IoUAccumulator.from_state_tensor(reduced, n_images=4)
    assert_same_metrics(rebuilt.compute(), single.compute())
    # the state is a copy: changing it does not change the accumulator
    state.zero_()
    assert shards[0].area_label.sum() > 0


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(3)
    pred, label = random_split(rng, 4, n_images=1)[0]
    a, b = IoUAccumulator(4), IoUAccumulator(4)
    a.update(pred.astype(np.uint8), label.astype(np.uint8))
    b.update(torch.from_numpy(pred), torch.from_numpy(label).to(torch.uint8))
    assert torch.equal(a.state_tensor(), b.state_tensor())


def test_prediction_out_of_range_raises_naming_the_value():
    acc = IoUAccumulator(3)
    with pytest.raises(ValueError, match=r"\b7\b"):
        acc.update(np.array([[0, 7]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="-1"):
        acc.update(np.array([[0, -1]]), np.array([[0, 1]]))
    # not dropped even where the label is ignored
    with pytest.raises(ValueError, match="255"):
        acc.update(np.array([[0, 255]]), np.array([[0, 255]]))
    assert acc.n_images == 0 and acc.area_label.sum() == 0


def test_label_out_of_range_raises_a_data_error():
    # e.g. ADE20K labels 1..150 evaluated without reduce_zero_label
    with pytest.raises(DataError, match="150"):
        IoUAccumulator(150).update(np.array([[0, 1]]), np.array([[0, 150]]))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        IoUAccumulator(3).update(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))


def test_float_input_is_rejected():
    with pytest.raises(TypeError, match="float"):
        IoUAccumulator(3).update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_as_record_maps_class_names():
    acc = IoUAccumulator(2)
    acc.update(np.array([[0, 1]]), np.array([[0, 0]]))
    rec = acc.compute().as_record(["sky", "cat"])
    assert rec["per_class_iou"] == {"sky": 50.0, "cat": 0.0}
    assert rec["n_images"] == 1 and rec["miou"] == 25.0
