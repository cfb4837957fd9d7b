"""Contour-refinement stage (issue #17): boundary targets, loss, head, decode refinement, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from smallseg.decode.refine import edge_pixels, refine_instances, refine_labels
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.models import ModelConfig, build_model
from smallseg.models.heads import BOUNDARY_CLIP_PX
from smallseg.train.losses import head_losses
from smallseg.train.targets import collate_targets, encode_targets


def _blobs(seed: int, size: int = 96, n: int = 14, gap: int = 6) -> np.ndarray:
    """Random ellipses and rectangles, each at least ``gap`` px from every other (so 1-px perturbations of
    one object never reach another)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    k = 0
    for _ in range(200):
        cy, cx = rng.uniform(8, size - 8, 2)
        ry, rx = rng.uniform(2.5, 7, 2)
        if rng.random() < 0.5:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        if ndimage.binary_dilation(labels > 0, iterations=gap)[mask].any():
            continue
        k += 1
        labels[mask] = k
        if k == n:
            break
    return labels


def _perturb(labels: np.ndarray, seed: int) -> np.ndarray:
    """Each object dilated or eroded by one pixel (4-neighbourhood), at random."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(labels)
    for k in range(1, labels.max() + 1):
        mask = labels == k
        mask = ndimage.binary_dilation(mask) if rng.random() < 0.5 else (ndimage.binary_erosion(mask) | (
            mask & ~ndimage.binary_dilation(ndimage.binary_erosion(mask))))  # eroded, thin parts kept
        out[mask & (out == 0)] = k
    return out


def test_boundary_target_is_signed_half_pixel_distance():
    labels = np.zeros((12, 12), np.int32)
    labels[3:9, 3:9] = 1
    labels[3:9, 9:11] = 2  # touching: the shared border is an edge of each
    t = encode_targets(labels)["boundary"] * BOUNDARY_CLIP_PX
    assert t[5, 3] == pytest.approx(0.5) and t[5, 2] == pytest.approx(-0.5)  # either side of an edge
    assert t[5, 8] == pytest.approx(0.5) and t[5, 9] == pytest.approx(0.5)  # shared border
    assert t[5, 5] == pytest.approx(2.5)  # edt 3 inside
    assert t[0, 0] == pytest.approx(-min(np.hypot(3, 3) - 0.5, BOUNDARY_CLIP_PX))
    # The zero level is the outline: sign == object mask.
    assert np.array_equal(t > 0, labels > 0)


def test_perfect_boundary_map_reproduces_true_outline_exactly():
    for seed in range(5):
        truth = _blobs(seed)
        decoded = _perturb(truth, seed + 100)
        assert not np.array_equal(decoded, truth)
        sdf = encode_targets(truth)["boundary"]
        refined = refine_labels(decoded, sdf)
        assert np.array_equal(refined, truth), f"seed {seed}: {(refined != truth).sum()} pixels differ"


def test_refine_keeps_the_partition_of_touching_objects_and_far_pixels():
    truth = np.zeros((20, 20), np.int32)
    truth[4:14, 4:10] = 1
    truth[4:14, 10:16] = 2
    decoded = truth.copy()
    decoded[3, 4:10] = 1  # one row too many on object 1
    decoded[4:14, 15] = 0  # one column too few on object 2
    sdf = encode_targets(truth)["boundary"]
    assert np.array_equal(refine_labels(decoded, sdf), truth)
    # A wrong map deep inside an object changes nothing there (only the band near the edge is re-decided).
    wrong = sdf.copy()
    wrong[8:10, 6:8] = -1.0
    assert np.array_equal(refine_labels(truth, wrong), truth)


def test_refine_instances_drops_emptied_objects_and_redenses_ids():
    labels = np.zeros((10, 10), np.int32)
    labels[1, 1] = 1  # a one-pixel splinter the map says is background
    labels[4:8, 4:8] = 2
    found = Instances(labels, np.array([1, 2]), np.array([1, 1], np.int32), np.array([0.5, 0.9], np.float32),
                      np.array([[1.0, 1.0], [5.5, 5.5]]))
    truth = np.zeros_like(labels)
    truth[4:8, 4:8] = 1
    out = refine_instances(found, encode_targets(truth)["boundary"])
    assert list(out.ids) == [1] and out.scores[0] == pytest.approx(0.9)
    assert np.array_equal(out.labels, truth)
    with pytest.raises(SmallsegError):
        refine_labels(labels, np.zeros((3, 3)))


def test_edge_pixels_both_sides():
    labels = np.zeros((5, 5), np.int32)
    labels[2, 2] = 1
    assert edge_pixels(labels).sum() == 5


def test_loss_term_only_with_the_head_and_boundary_aware():
    truth = _blobs(3, size=48, n=4)
    targets = collate_targets([encode_targets(truth)])
    sem = torch.zeros(1, 2, 48, 48)
    base = head_losses({"semantic": sem}, targets)
    assert "boundary" not in base
    exact = targets["boundary"][:, None].clone()
    assert head_losses({"semantic": sem, "boundary": exact}, targets)["boundary"].item() == pytest.approx(0.0, abs=1e-7)
    # The same error costs more at the edge than far from it.
    near = (targets["boundary"].abs() <= 1.5 / BOUNDARY_CLIP_PX)[0]
    far = ~near
    e_near, e_far = exact.clone(), exact.clone()
    e_near[0, 0][near] += 0.1
    e_far[0, 0][far] += 0.1
    l_near = head_losses({"boundary": e_near}, targets)["boundary"].item()
    l_far = head_losses({"boundary": e_far}, targets)["boundary"].item()
    w_near, w_far = 5.0 * near.sum().item(), far.sum().item()
    assert l_near == pytest.approx(0.1 * w_near / (w_near + w_far), rel=1e-4)
    assert l_far == pytest.approx(0.1 * w_far / (w_near + w_far), rel=1e-4)


def test_boundary_head_config_and_model():
    with pytest.raises(SmallsegError, match="boundary_head"):
        ModelConfig(boundary_head="edges")
    model = build_model("resnet18", encoder_depth=3, encoder_output_stride=32, in_channels=1,
                        boundary_head="signed_distance", decoder_pyramid_channels=32,
                        decoder_segmentation_channels=32).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 40, 40))
    assert out["boundary"].shape == (1, 1, 40, 40)
    assert "boundary_head" in ModelConfig.from_json(model.config.to_json()).to_dict()
    plain = ModelConfig()
    assert plain.boundary_head is None
    assert model.config.architecture_mismatches(ModelConfig(**{**model.config.to_dict(), "boundary_head": None}))


def test_refinement_keeps_tiling_exact(tiny_model):
    """A model whose maps depend on a 3x3 neighbourhood only (bright squares; the boundary head says 'inside'
    where at least 5 of the 3x3 pixels are bright: square corners go): tiled prediction == one tile, and the
    refinement really changed the objects."""
    from smallseg.pipeline.array import predict_array
    from smallseg.tiling.grid import tile_windows

    torch.manual_seed(0)
    light = dict(classes=1, class_names=["square"], max_distance_px=6, tile_size_px=64, input_scale=1 / 255)
    m = tiny_model("mobilenetv3", seed=None, **light, heads=("semantic",), lfe=None,
                   boundary_head="signed_distance")
    with torch.no_grad():
        fuse = m.refiner.to_full.fuse[0]
        fuse.weight.zero_()
        fuse.weight[0, -3:, 1, 1] = 1.0  # feature 0 = sum of the raw bands (3.0 on a bright pixel)
        head = m.heads["semantic"]
        head.weight.zero_()
        head.weight[1, 0, 1, 1] = 10.0
        head.bias[:] = torch.tensor([0.0, -15.0])
        b = m.heads["boundary"]
        b.weight.zero_()
        b.weight[0, 0] = 1.0  # 3x3 sum of feature 0
        b.bias[:] = -13.5  # > 0 where at least 5 of the 9 pixels are bright (3.0 each)
    m = m.eval()
    h, w = 150, 170
    rng = np.random.default_rng(2)
    gt = np.zeros((h, w), np.int32)
    k = 0
    for _ in range(400):
        s = int(rng.integers(3, 9))
        r0, c0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        if gt[max(r0 - 2, 0):r0 + s + 2, max(c0 - 2, 0):c0 + s + 2].any():
            continue
        k += 1
        gt[r0:r0 + s, c0:c0 + s] = k
    image = np.where(gt > 0, 255, 0).astype(np.uint8)[None].repeat(3, axis=0)
    assert len(tile_windows(h, w, 64, 12)) > 9
    tiled = predict_array(image, m, tile_size_px=64)
    whole = predict_array(image, m, tile_size_px=256)
    assert np.array_equal(tiled.labels > 0, whole.labels > 0) and len(tiled) == len(whole) == k
    fg = tiled.labels > 0
    pairs = np.unique(np.stack([tiled.labels[fg], whole.labels[fg]]), axis=1)
    assert pairs.shape[1] == k  # the same objects, one to one
    # Every square lost exactly its 4 corner pixels (the map says so), nothing else.
    assert (tiled.labels > 0).sum() == (gt > 0).sum() - 4 * k
