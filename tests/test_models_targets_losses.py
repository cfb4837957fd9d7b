"""Head targets from instance labels, and the three head losses, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smallseg.errors import SmallsegError
from smallseg.train.losses import head_losses
from smallseg.train.targets import collate_targets, encode_targets


def test_centroid_vectors_point_at_each_objects_mean_pixel():
    lab = np.zeros((20, 30), np.int32)
    lab[2:5, 3:10] = 7  # ids need not be dense
    lab[5:12, 3:6] = 1000  # touches id 7
    lab[15:20, 25:30] = 3  # at the corner
    t = encode_targets(lab, None, max_distance_px=10.0)
    for obj in (7, 1000, 3):
        yy, xx = np.nonzero(lab == obj)
        cy, cx = yy.mean(), xx.mean()
        np.testing.assert_allclose(t["centroid"][0, yy, xx], (cy - yy) / 10.0, atol=1e-6)
        np.testing.assert_allclose(t["centroid"][1, yy, xx], (cx - xx) / 10.0, atol=1e-6)
    assert np.array_equal(t["centroid_mask"], lab > 0)
    assert not t["centroid"][:, lab == 0].any()
    assert np.array_equal(t["semantic"], (lab > 0).astype(np.int64))
    assert t["centroid"].dtype == np.float32 and t["centroid"].shape == (2, 20, 30)


def test_distance_map_is_per_object_and_low_on_shared_borders():
    lab = np.zeros((12, 20), np.int32)
    lab[1:10, 1:10] = 1  # 9x9 square
    lab[1:10, 10:19] = 2  # touching 9x9 square
    t = encode_targets(lab, None, 48.0)
    d = t["distance"]
    # Hand values: in a 9x9 square the centre is 5 px from outside, the border 1 px.
    assert d[5, 5] == pytest.approx(1.0) and d[5, 14] == pytest.approx(1.0)
    assert d[5, 9] == pytest.approx(1 / 5) and d[5, 10] == pytest.approx(1 / 5)  # the shared border
    assert d[1, 5] == pytest.approx(1 / 5)
    assert d[0].max() == 0 and d[:, 19].max() == 0
    assert 0 <= d.min() and d.max() <= 1
    tiny = np.zeros((5, 5), np.int32)
    tiny[0:2, 0:2] = 1  # 2x2 at the image corner: the edge counts as border, every pixel is border
    assert np.allclose(encode_targets(tiny, None, 48.0)["distance"][0:2, 0:2], 1.0)


def test_classes_and_ignore():
    lab = np.zeros((6, 6), np.int32)
    lab[0:2, 0:2] = 1
    lab[3:5, 3:5] = 2
    lab[5, 0] = -1  # unlabelled
    cls = np.zeros_like(lab)
    cls[lab == 1] = 4
    cls[lab == 2] = 2
    cls[0, 5] = -1
    t = encode_targets(lab, cls, 48.0)
    assert t["semantic"][0, 0] == 4 and t["semantic"][3, 3] == 2
    assert t["ignore"][5, 0] and t["ignore"][0, 5] and t["ignore"].sum() == 2
    with pytest.raises(SmallsegError, match="class 0"):
        encode_targets(lab, np.zeros_like(lab), 48.0)
    with pytest.raises(SmallsegError, match="shape"):
        encode_targets(lab, cls[:5], 48.0)
    with pytest.raises(SmallsegError, match="integer"):
        encode_targets(lab.astype(float), None, 48.0)


def _batch():
    lab = np.zeros((16, 16), np.int32)
    lab[2:8, 2:8] = 1
    lab[10:14, 9:15] = 2
    lab[15, :] = -1
    return collate_targets([encode_targets(lab, None, 8.0), encode_targets(lab.T.copy(), None, 8.0)])


def test_centroid_loss_is_the_mean_euclidean_norm_not_its_square():
    targets = _batch()
    pred = targets["centroid"].clone()
    mask = targets["centroid_mask"] & ~targets["ignore"]
    pred[:, 0][mask] += 0.3
    pred[:, 1][mask] += 0.4  # error vector (0.3, 0.4): norm 0.5, squared 0.25
    pred = torch.where(mask[:, None], pred, torch.full_like(pred, 9.0))  # errors outside objects do not count
    losses = head_losses({"centroid": pred}, targets)
    assert float(losses["centroid"]) == pytest.approx(0.5, abs=1e-4)
    exact = head_losses({"centroid": targets["centroid"].clone()}, targets)
    assert float(exact["centroid"]) == pytest.approx(0.0, abs=1e-3)


def test_semantic_and_distance_losses_match_torch_on_valid_pixels_and_weights_apply():
    torch.manual_seed(0)
    targets = _batch()
    sem = torch.randn(2, 2, 16, 16)
    dist = torch.randn(2, 1, 16, 16)
    cen = torch.randn(2, 2, 16, 16)
    valid = ~targets["ignore"]
    out = head_losses({"semantic": sem, "distance": dist, "centroid": cen}, targets,
                      semantic_weight=2.0, centroid_weight=0.5, distance_weight=3.0)
    # Independent: per-pixel CE / BCE, averaged over the valid pixels only.
    ce = F.cross_entropy(sem, targets["semantic"], reduction="none")[valid].mean()
    bce = F.binary_cross_entropy_with_logits(dist[:, 0], targets["distance"], reduction="none")[valid].mean()
    assert float(out["semantic"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(out["distance"]) == pytest.approx(float(bce), rel=1e-5)
    expected_total = 2.0 * out["semantic"] + 0.5 * out["centroid"] + 3.0 * out["distance"]
    assert float(out["total"]) == pytest.approx(float(expected_total), rel=1e-6)
    # Predictions on ignored pixels change nothing.
    ignored = targets["ignore"][:, None]
    assert ignored.any()
    sem2 = torch.where(ignored, torch.full_like(sem, 100.0), sem)
    dist2 = torch.where(ignored, torch.full_like(dist, -100.0), dist)
    out2 = head_losses({"semantic": sem2, "distance": dist2, "centroid": cen}, targets,
                       semantic_weight=2.0, centroid_weight=0.5, distance_weight=3.0)
    assert float(out2["total"]) == pytest.approx(float(out["total"]), rel=1e-6)


def test_only_present_heads_are_scored_and_empty_objects_are_safe():
    targets = collate_targets([encode_targets(np.zeros((8, 8), np.int32), None, 8.0)])
    cen = torch.zeros(1, 2, 8, 8, requires_grad=True)
    out = head_losses({"centroid": cen}, targets)
    assert set(out) == {"total", "centroid"} and float(out["total"].detach()) == 0.0
    out["total"].backward()  # no objects: zero loss, still differentiable
    with pytest.raises(SmallsegError):
        head_losses({"boxes": cen}, targets)
