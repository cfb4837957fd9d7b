"""Connected-component baseline decoding, checked against scikit-image's labelling."""

import numpy as np
import pytest
import torch
from skimage.measure import label, regionprops

from smallseg.decode.centroids import DecodeConfig
from smallseg.decode.components import decode_components, decode_outputs


def _probs(fg, cls):
    p = np.zeros((3,) + fg.shape, np.float32)
    p[0] = np.where(fg, 0.1, 0.9)
    p[1] = np.where(fg & (cls == 1), 0.9, 0.05)
    p[2] = np.where(fg & (cls == 2), 0.9, 0.05)
    return p / p.sum(0, keepdims=True)


def test_regions_match_skimage_and_small_ones_drop():
    rng = np.random.default_rng(0)
    fg = rng.random((40, 50)) > 0.7
    cls = np.where(rng.random((40, 50)) > 0.5, 1, 2)
    out = decode_components(_probs(fg, cls), min_area_px=3)
    reference = [r for r in regionprops(label(fg, connectivity=2)) if r.area >= 3]
    assert len(out) == len(reference)
    ours = sorted(tuple(sorted(map(tuple, np.argwhere(out.labels == k)))) for k in out.ids)
    theirs = sorted(tuple(sorted(map(tuple, r.coords))) for r in reference)
    assert ours == theirs


def test_touching_objects_merge_which_is_the_baselines_known_failure():
    fg = np.zeros((20, 20), bool)
    fg[5:10, 2:8] = fg[5:10, 8:14] = True  # two touching boxes
    cls = np.ones((20, 20), int)
    assert len(decode_components(_probs(fg, cls))) == 1


def test_class_centroid_and_score():
    fg = np.zeros((20, 20), bool)
    fg[2:6, 2:6] = True
    cls = np.full((20, 20), 2)
    out = decode_components(_probs(fg, cls))
    assert out.class_ids.tolist() == [2]
    np.testing.assert_allclose(out.centroids_yx[0], [3.5, 3.5])
    assert out.scores[0] == pytest.approx(1 - 0.1 / 1.05)  # mean foreground probability


def test_decode_outputs_uses_components_without_a_centroid_head():
    fg = np.zeros((16, 16), bool)
    fg[2:5, 2:5] = fg[9:13, 9:12] = True
    logits = torch.from_numpy(np.log(_probs(fg, np.ones((16, 16), int))))[None]
    out = decode_outputs({"semantic": logits}, DecodeConfig(max_distance_px=8))
    assert len(out) == 1 and len(out[0]) == 2
