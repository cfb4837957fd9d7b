"""predict_volume / link_slices: 3-D linking, measurements in mm against analytic shapes, intensity mapping,
geometry kept; with a real (tiny, random-weight) SmallObjectNet."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.medical import PRESETS, IntensityPreset, Volume, from_sitk
from smallseg.pipeline.array import predict_array
from smallseg.pipeline.options import OptionError, VolumeOptions
from smallseg.pipeline.volume import choose_preset, link_slices, predict_volume, slice_input

from medical_helpers import rotation  # tests/ is on sys.path under pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sitk_volume(array_zyx, spacing_xyz=(0.7, 0.8, 1.5), origin=(-31.0, 12.5, 80.0), direction=None,
                modality="CT") -> Volume:
    """A Volume made through SimpleITK itself (the geometry convention under test is SimpleITK's)."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction if direction is not None else np.eye(3)).ravel()))
    return from_sitk(image, modality=modality)


def physical_points(image: sitk.Image, shape_zyx) -> np.ndarray:
    """(Z, Y, X, 3) physical LPS centre of every voxel: origin + D @ (spacing * index), checked against sitk."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape_zyx], indexing="ij"), -1)[..., ::-1].astype(float)
    pts = np.asarray(image.GetOrigin()) + (idx * np.asarray(image.GetSpacing())) @ d.T
    for probe in ((0, 0, 0), (shape_zyx[2] - 1, 3, shape_zyx[0] - 1)):
        assert np.allclose(pts[probe[2], probe[1], probe[0]], image.TransformIndexToPhysicalPoint(probe))
    return pts


def slices_of(labels_zyx: np.ndarray, classes_zyx: np.ndarray | None = None, score: float = 1.0):
    for z in range(labels_zyx.shape[0]):
        cls = None if classes_zyx is None else classes_zyx[z]
        inst = Instances.from_labels(labels_zyx[z], cls)
        inst.scores[:] = score
        yield inst


# ---------------------------------------------------------------------------------------------------------------
# measurements against an analytic sphere
# ---------------------------------------------------------------------------------------------------------------


def test_voxelised_sphere_volume_diameter_and_centroid_in_mm():
    spacing_xyz = (0.7, 0.8, 1.5)
    direction = rotation(0.3, -0.2, 0.5)
    shape = (24, 40, 44)
    image = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkInt16)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin((-31.0, 12.5, 80.0))
    image.SetDirection(tuple(direction.ravel()))
    pts = physical_points(image, shape)
    # Sphere centre: the physical point of a deliberately off-grid continuous index.
    centre_index_xyz = (21.3, 19.6, 11.4)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_index_xyz))
    r = 7.0
    mask = np.linalg.norm(pts - centre, axis=-1) <= r
    volume = sitk_volume(np.zeros(shape, np.int16), spacing_xyz, image.GetOrigin(), direction)

    labels, table = link_slices(slices_of(mask.astype(np.int32)), volume, class_names=["nodule"])

    assert len(table) == 1 and table.class_names == ["nodule"]
    assert np.array_equal(labels > 0, mask) and labels.dtype == np.uint32
    voxel_mm3 = float(np.prod(spacing_xyz))
    # Exact: the voxel count of the mask (counted here) times the voxel volume.
    assert table.voxels[0] == mask.sum()
    assert table.volume_mm3[0] == pytest.approx(mask.sum() * voxel_mm3, rel=1e-12)
    # Analytic: voxels whose centre is within r all lie within r + h (h = half the voxel diagonal), and every
    # point within r - h lies in such a voxel, so V(r - h) <= measured <= V(r + h).
    h = 0.5 * math.sqrt(sum(s * s for s in spacing_xyz))
    sphere = lambda radius: 4.0 / 3.0 * math.pi * radius ** 3  # noqa: E731
    assert sphere(r - h) <= table.volume_mm3[0] <= sphere(r + h)
    assert abs(table.equivalent_diameter_mm[0] - 2 * r) <= 2 * h
    # In practice voxelisation of a sphere 9x the voxel size is far better than the bound: a few percent.
    assert table.volume_mm3[0] == pytest.approx(sphere(r), rel=0.05)
    # Centroid: SimpleITK's own transform of the mask's mean index, and within half a voxel of the true centre.
    mean_index_zyx = np.argwhere(mask).mean(axis=0)
    expected = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in mean_index_zyx[::-1]))
    assert np.allclose(table.centroid_lps_mm[0], expected, atol=1e-9)
    assert np.linalg.norm(table.centroid_lps_mm[0] - centre) <= h
    zs = np.nonzero(mask.any(axis=(1, 2)))[0]
    assert tuple(table.slice_range[0]) == (zs[0], zs[-1])
    ys, xs = np.nonzero(mask.any(axis=(0, 2)))[0], np.nonzero(mask.any(axis=(0, 1)))[0]
    assert tuple(table.bbox[0]) == (zs[0], ys[0], xs[0], zs[-1] + 1, ys[-1] + 1, xs[-1] + 1)


# ---------------------------------------------------------------------------------------------------------------
# linking
# ---------------------------------------------------------------------------------------------------------------


def disc(shape, cy, cx, r):
    yy, xx = np.indices(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_linking_separates_disjoint_blobs_and_joins_a_column():
    shape = (9, 48, 48)
    lab = np.zeros(shape, np.int32)
    lab[0][disc(shape[1:], 10, 10, 4)] = 1      # slice 0, top left
    lab[1][disc(shape[1:], 35, 35, 4)] = 1      # slice 1, bottom right: touches nothing of slice 0
    for z in range(2, 7):                       # one blob across slices 2..6, drifting slightly
        lab[z][disc(shape[1:], 24, 20 + z, 5)] = 3
    lab[8][disc(shape[1:], 24, 27, 5)] = 1      # after a gap slice: a new object
    volume = sitk_volume(np.zeros(shape, np.int16))

    labels, table = link_slices(slices_of(lab), volume)

    assert len(table) == 4
    assert list(table.slice_range[:, 0]) == [0, 1, 2, 8] and list(table.slice_range[:, 1]) == [0, 1, 6, 8]
    column = labels[2:7][lab[2:7] > 0]
    assert np.unique(column).size == 1 and table.voxels[2] == (lab[2:7] > 0).sum()
    # Ids are dense and in order of first appearance; every label value has a row.
    assert list(table.ids) == [1, 2, 3, 4] and set(np.unique(labels)) == {0, 1, 2, 3, 4}
    for i in table.ids:
        assert table.voxels[i - 1] == (labels == i).sum()


def test_linking_needs_same_class_and_enough_overlap_and_is_one_to_one():
    shape = (2, 40, 60)
    lab = np.zeros(shape, np.int32)
    cls = np.zeros(shape, np.int32)
    # A: same place in both slices but different classes -> two objects.
    lab[0][disc(shape[1:], 10, 10, 4)] = 1; cls[0][disc(shape[1:], 10, 10, 4)] = 1
    lab[1][disc(shape[1:], 10, 10, 4)] = 1; cls[1][disc(shape[1:], 10, 10, 4)] = 2
    # B: a wide bar splits into two pieces below it; each piece lies wholly under the bar (overlap 1.0 of the
    # smaller), the larger piece wins the one-to-one link, the other starts its own object.
    lab[0][25:31, 20:50] = 2; cls[0][25:31, 20:50] = 1
    lab[1][25:31, 20:38] = 2; cls[1][25:31, 20:38] = 1
    lab[1][25:31, 41:50] = 3; cls[1][25:31, 41:50] = 1
    # C: shifted by 2 columns, the pieces share 6 of 18 pixels (1/3), below the 0.5 threshold -> separate.
    lab[0][2:8, 40:43] = 3; cls[0][2:8, 40:43] = 1
    lab[1][2:8, 42:45] = 4; cls[1][2:8, 42:45] = 1
    labels, table = link_slices(slices_of(lab, cls), sitk_volume(np.zeros(shape, np.int16)),
                                class_names=["a", "b"])
    a0, a1 = labels[0, 10, 10], labels[1, 10, 10]
    assert a0 != a1 and table.class_names[a0 - 1] == "a" and table.class_names[a1 - 1] == "b"
    assert labels[0, 27, 25] == labels[1, 27, 25] != labels[1, 27, 45]
    assert labels[0, 4, 42] != labels[1, 4, 42]
    assert len(table) == 6
    # With a lower threshold C links.
    _, loose = link_slices(slices_of(lab, cls), sitk_volume(np.zeros(shape, np.int16)), link_min_overlap=0.3)
    assert len(loose) == 5


def test_min_slices_drops_short_objects_and_keeps_ids_dense():
    shape = (4, 30, 30)
    lab = np.zeros(shape, np.int32)
    lab[0][disc(shape[1:], 8, 8, 3)] = 1                       # 1 slice
    for z in range(4):
        lab[z][disc(shape[1:], 20, 20, 4)] = 2                 # 4 slices
    labels, table = link_slices(slices_of(lab), sitk_volume(np.zeros(shape, np.int16)), min_slices=2)
    assert len(table) == 1 and list(table.ids) == [1]
    assert set(np.unique(labels)) == {0, 1} and labels[0, 8, 8] == 0


def test_2d_image_gives_area_in_mm2():
    image = sitk.GetImageFromArray(np.zeros((30, 40), np.uint8))
    image.SetSpacing((0.25, 0.5))  # x, y in mm
    volume = from_sitk(image)
    lab = np.zeros((30, 40), np.int32)
    lab[disc((30, 40), 15, 20, 6)] = 1
    labels, table = link_slices([Instances.from_labels(lab)], volume)
    assert labels.shape == (30, 40) and table.ndim == 2 and table.volume_mm3 is None
    assert table.area_mm2[0] == pytest.approx((lab > 0).sum() * 0.125)
    assert table.equivalent_diameter_mm[0] == pytest.approx(2 * math.sqrt(table.area_mm2[0] / math.pi))
    assert "area_mm2" in table.columns() and "centroid_lps_z_mm" not in table.columns()


def test_objects_csv_has_units_and_matches_the_table(tmp_path):
    shape = (3, 20, 20)
    lab = np.zeros(shape, np.int32)
    lab[:, 5:9, 5:9] = 1
    volume = sitk_volume(np.zeros(shape, np.int16))
    _, table = link_slices(slices_of(lab, score=0.5), volume)
    path = table.write_csv(tmp_path / "objects.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1 and [p.name for p in tmp_path.iterdir()] == ["objects.csv"]
    assert float(rows[0]["volume_mm3"]) == pytest.approx(48 * 0.7 * 0.8 * 1.5, rel=1e-4)
    assert float(rows[0]["score"]) == pytest.approx(0.5)
    assert (rows[0]["slice_first"], rows[0]["slice_last"], rows[0]["bbox_z1"]) == ("0", "2", "3")
    _, empty = link_slices(slices_of(np.zeros(shape, np.int32)), volume)
    empty.write_csv(tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().startswith("id,class,")


def test_link_slices_refuses_a_wrong_slice_count():
    volume = sitk_volume(np.zeros((3, 10, 10), np.int16))
    with pytest.raises(SmallsegError, match="2 slices given, the volume has 3"):
        link_slices(slices_of(np.zeros((2, 10, 10), np.int32)), volume)


# ---------------------------------------------------------------------------------------------------------------
# prediction with a real model
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model):
    # The semantic bias leans the random model towards foreground so there are objects to link.
    return tiny_model("resnet18", semantic_bias=[-1.0, 1.0], classes=1, in_channels=1, max_distance_px=6,
                      tile_size_px=128, class_names=["nodule"])


def ct_volume(shape=(3, 32, 40), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return sitk_volume(rng.integers(-1100, 600, shape).astype(np.int16), direction=rotation(0.1, 0.2, 0.3))


def test_predict_volume_labels_agree_with_the_table(model):
    volume = ct_volume()
    pred = predict_volume(volume, model, batch_size=2)
    assert pred.labels.shape == volume.spatial_shape and pred.labels.dtype == np.uint32
    ids = np.unique(pred.labels)
    ids = ids[ids > 0]
    assert len(pred.objects) > 0 and list(ids) == list(pred.objects.ids)
    counts = np.bincount(pred.labels.ravel(), minlength=len(ids) + 1)[1:]
    assert np.array_equal(counts, pred.objects.voxels)
    assert np.allclose(pred.objects.volume_mm3, counts * volume.voxel_volume_mm3)
    for i, (z0, z1) in zip(pred.objects.ids, pred.objects.slice_range):
        zs = np.nonzero((pred.labels == i).any(axis=(1, 2)))[0]
        assert (zs[0], zs[-1]) == (z0, z1)
    assert np.all((pred.objects.scores > 0) & (pred.objects.scores <= pred.objects.max_slice_scores + 1e-6))
    assert pred.window.name == "lung" and pred.preset_source == "default for CT"
    short = predict_volume(volume, model, min_slices=4)
    assert len(short.objects) == 0 and not short.labels.any()
    assert "fewer than min_slices=4" in short.warnings[-1]


def test_model_sees_the_window_mapped_to_unit_range(model):
    """Whatever input_scale the model has, the tensor it gets is the preset's [0, 1] image (no mean/std here)."""
    volume = ct_volume(shape=(2, 32, 32))
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    old_scale = model.config.input_scale
    try:
        model.config.input_scale = 1 / 255  # e.g. a model whose config says 8-bit input
        predict_volume(volume, model, preset="soft_tissue")
    finally:
        model.config.input_scale = old_scale
        hook.remove()
    low, high = PRESETS["soft_tissue"].low, PRESETS["soft_tissue"].high  # 40 +- 200 HU
    assert (low, high) == (-160.0, 240.0)
    for z, x in enumerate(seen):
        expected = np.clip((volume.array[z].astype(np.float64) - low) / (high - low), 0, 1)
        got = x[0, 0, :32, :32].numpy()
        assert np.allclose(got, expected, atol=1e-5)


def test_preset_order_argument_checkpoint_modality_and_percentile_on_the_whole_volume(model):
    ct = ct_volume(shape=(3, 20, 20))
    assert choose_preset(ct, model, "bone")[0] == PRESETS["bone"]
    assert choose_preset(ct, model, "raw") == (None, "argument")
    stored = IntensityPreset.window(-500, 100, name="trained")
    model.config.training["intensity_preset"] = stored.to_dict()
    try:
        assert choose_preset(ct, model) == (stored, "checkpoint")
    finally:
        del model.config.training["intensity_preset"]
    # MR: percentiles of the whole volume (not per slice): slices with different ranges share one window.
    rng = np.random.default_rng(3)
    mr = np.stack([rng.integers(0, 100, (20, 20)), rng.integers(400, 3000, (20, 20))]).astype(np.int16)
    window, source = choose_preset(sitk_volume(mr, modality="MR"), model)
    lo, hi = np.percentile(mr.astype(np.float64), [1.0, 99.5])
    assert (window.low, window.high) == pytest.approx((lo, hi)) and source == "default for MR"
    with pytest.raises(SmallsegError, match="unknown"):
        choose_preset(ct, model, "lungs")


def test_predict_volume_on_a_2d_image_and_channel_mismatch(model):
    image = sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 255, (30, 40)).astype(np.uint8))
    image.SetSpacing((0.3, 0.3))
    pred = predict_volume(from_sitk(image), model)
    assert pred.labels.shape == (30, 40) and pred.objects.ndim == 2
    assert pred.window.low < pred.window.high  # percentile default for non-CT
    rgb = from_sitk(sitk.GetImageFromArray(np.zeros((20, 20, 3), np.uint8), isVector=True))
    with pytest.raises(SmallsegError, match="3 channel.*expects 1"):
        predict_volume(rgb, model)


def test_decode_settings_stored_for_the_volumes_modality_are_used(model):
    ct = ct_volume()
    mr = sitk_volume(ct.array, modality="MR")
    baseline = predict_volume(ct, model, preset="lung")
    assert len(baseline.objects) > 0
    threshold = float(np.median(baseline.objects.max_slice_scores))
    model.config.training["decode_by_modality"] = {"ct": {"min_score": threshold}}  # matched case-insensitively
    try:
        ct_pred = predict_volume(ct, model, preset="lung")
        mr_pred = predict_volume(mr, model, preset="lung")  # same pixels, same window, another modality
        override = predict_volume(ct, model, preset="lung", decode={"min_score": 0.0})
    finally:
        del model.config.training["decode_by_modality"]
    assert ct_pred.decode.min_score == threshold and mr_pred.decode.min_score == baseline.decode.min_score
    assert 0 < len(ct_pred.objects) < len(baseline.objects)
    assert np.all(ct_pred.objects.max_slice_scores >= threshold - 1e-6)
    assert np.array_equal(mr_pred.labels, baseline.labels)
    assert override.decode.min_score == 0.0  # an explicit setting wins over the modality's


def test_tta_reaches_every_slice(model):
    """``predict_volume(tta=...)`` (#14): each slice is predicted as ``predict_array(tta=...)`` predicts it with
    the volume's normalisation, and that is not what the plain model finds."""
    volume = ct_volume(shape=(2, 32, 40))
    plain = predict_volume(volume, model, preset="lung")
    flips = predict_volume(volume, model, preset="lung", tta="flips")
    assert flips.options.tta == "flips" and plain.options.tta is None
    assert not np.array_equal(flips.labels > 0, plain.labels > 0)
    for z in range(2):
        ref = predict_array(volume.array[z], model, tta="flips", normalize=flips.normalization,
                            norm_stats=flips.norm_stats, tile_size_px=64, decode=flips.decode)
        np.testing.assert_array_equal(flips.labels[z] > 0, ref.labels > 0)
    # The TTA wrapper is per call: the model passed in is left as it was.
    assert type(model).__name__ == "SmallObjectNet"


def test_modality_option_stands_in_for_a_file_that_does_not_say(model):
    ct = ct_volume()
    unknown = sitk_volume(ct.array, modality="")
    as_ct = predict_volume(unknown, model, modality="ct")
    assert as_ct.window.name == "lung" and as_ct.preset_source == "default for CT"
    np.testing.assert_array_equal(as_ct.labels, predict_volume(ct, model).labels)
    assert predict_volume(unknown, model).preset_source != "default for CT"


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="lungs"), r"^preset 'lungs': unknown; choose one of lung"),
    (dict(preset="lung", normalize="percentile"), r"^preset 'lung': give a preset or normalize / percentiles"),
    (dict(min_slices=0), r"^min_slices 0: must be a whole number of at least 1"),
    (dict(link_min_overlap=0.0), r"^link_min_overlap 0: must be in \(0, 1\]"),
    (dict(by_modality="no"), r"^by_modality no: must be True or False"),
    (dict(batch_size=-1), r"^batch_size -1: must be a whole number"),
])
def test_bad_volume_options_are_refused_before_the_model_runs(kwargs, message):
    with pytest.raises(OptionError, match=message):
        VolumeOptions(**kwargs)
    with pytest.raises(OptionError, match=message):
        predict_volume(ct_volume(), "not a model", **kwargs)  # refused before the model is touched


# ---------------------------------------------------------------------------------------------------------------
# 2.5-D models: neighbouring slices as channels (ModelConfig.slice_context)
# ---------------------------------------------------------------------------------------------------------------


def test_slice_input_orders_neighbours_and_clamps_at_the_ends():
    array = np.arange(4, dtype=np.int16)[:, None, None] * np.ones((4, 3, 5), np.int16)  # slice z holds z
    volume = sitk_volume(array)
    assert slice_input(volume, 2).shape == (1, 3, 5)
    assert [int(p[0, 0]) for p in slice_input(volume, 0, 1)] == [0, 0, 1]
    assert [int(p[0, 0]) for p in slice_input(volume, 2, 2)] == [0, 1, 2, 3, 3]
    assert [int(p[0, 0]) for p in slice_input(volume, 3, 1)] == [2, 3, 3]


def test_a_slice_context_model_sees_its_neighbours_as_a_stacked_volume_would(tiny_model):
    """predict_volume(V, 2.5-D model) == predict_volume(V stacked by hand into 3 bands, the same weights as a
    plain 3-band model): the stacking is z-1, z, z+1, clamped, under the same CT window."""
    common = dict(semantic_bias=[-1.0, 1.0], classes=1, in_channels=3, max_distance_px=6, tile_size_px=128,
                  class_names=["nodule"])
    context_model = tiny_model("resnet18", seed=2, slice_context=1, **common)  # a seed whose random net finds objects
    plain_model = tiny_model("resnet18", **common)
    plain_model.load_state_dict(context_model.state_dict())
    volume = ct_volume(shape=(4, 32, 40))
    idx = np.clip(np.arange(4)[:, None] + np.array([-1, 0, 1]), 0, 3)             # (Z, 3) neighbour indices
    stacked = np.moveaxis(volume.array[idx], 1, -1)                                 # (Z, Y, X, 3)
    stacked_volume = Volume(array=stacked, spacing_zyx_mm=volume.spacing_zyx_mm, origin_lps_mm=volume.origin_lps_mm,
                            direction_lps=volume.direction_lps, modality="CT")
    got = predict_volume(volume, context_model)
    expected = predict_volume(stacked_volume, plain_model)
    assert len(expected.objects) > 0
    assert np.array_equal(got.labels, expected.labels)
    assert np.allclose(got.objects.scores, expected.objects.scores)
    # The slice order matters: the same model given z+1, z, z-1 sees other input and finds other objects.
    reversed_volume = Volume(array=stacked[..., ::-1].copy(), spacing_zyx_mm=volume.spacing_zyx_mm,
                             origin_lps_mm=volume.origin_lps_mm, direction_lps=volume.direction_lps, modality="CT")
    assert not np.array_equal(predict_volume(reversed_volume, plain_model).labels, expected.labels)
    with pytest.raises(SmallsegError, match=r"3 channel.*expects 1 per slice \(with its 2 neighbouring slices: 3\)"):
        predict_volume(stacked_volume, context_model)


def test_slice_context_is_data_in_the_config_and_checked():
    from smallseg.models.config import ModelConfig

    config = ModelConfig(encoder_name="resnet18", in_channels=5, slice_context=2)
    assert config.to_dict()["slice_context"] == 2 and (config.slices_per_input, config.bands_per_slice) == (5, 1)
    assert ModelConfig.from_json(config.to_json()).slice_context == 2
    assert "slice_context" not in ModelConfig(encoder_name="resnet18").to_dict()  # old checkpoints' JSON unchanged
    with pytest.raises(SmallsegError, match="slice_context: 1: in_channels=2 is not a multiple of the 3 slices"):
        ModelConfig(encoder_name="resnet18", in_channels=2, slice_context=1)
    with pytest.raises(SmallsegError, match="slice_context"):
        ModelConfig(encoder_name="resnet18", in_channels=3, slice_context=9)


def test_min_slices_defaults_to_what_the_checkpoint_says(model):
    volume = ct_volume(shape=(4, 32, 40))
    baseline = predict_volume(volume, model)
    assert baseline.options.min_slices == 1 and len(baseline.objects) > 0
    model.config.training["volume_min_slices"] = 5  # more slices than the volume has
    try:
        stored = predict_volume(volume, model)
        explicit = predict_volume(volume, model, min_slices=1)
    finally:
        del model.config.training["volume_min_slices"]
    assert stored.options.min_slices == 5 and len(stored.objects) == 0
    assert "fewer than min_slices=5" in stored.warnings[-1]
    assert np.array_equal(explicit.labels, baseline.labels)
    from smallseg.models.config import ModelConfig

    with pytest.raises(SmallsegError, match="volume_min_slices"):
        ModelConfig(encoder_name="resnet18", training={"volume_min_slices": 0})
