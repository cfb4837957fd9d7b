"""predict_array: tiles, a real model, decoding and stitching composed over an in-memory image."""

import numpy as np
import pytest
import tifffile

from smallseg.errors import SmallsegError
from smallseg.pipeline.array import drop_invalid, plan_tiling, predict_array
from smallseg.pipeline.options import OptionError, PredictOptions
from smallseg.instances import Instances
from smallseg.models import load_model

from conftest import DATA_DIR  # tests/ is on sys.path under pytest


@pytest.fixture(scope="module")
def model(tiny_model):
    # Bias the semantic head towards foreground so the random model produces objects to stitch.
    return tiny_model("resnet18", semantic_bias=[-1.0, 1.0, 0.5], classes=2, max_distance_px=6, tile_size_px=64,
                      input_scale=1 / 255)


def _image(h=150, w=170, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (3, h, w), dtype=np.uint8)


def test_scene_labels_agree_with_the_object_columns(model):
    scene = predict_array(_image(), model, batch_size=3)
    table = scene.objects
    assert scene.labels.shape == (150, 170)
    present = np.unique(scene.labels)
    present = present[present != 0]
    assert len(scene) > 0
    np.testing.assert_array_equal(np.sort(scene.ids), present)  # every listed object is in the raster
    assert len(set(scene.ids.tolist())) == len(scene)
    np.testing.assert_array_equal(table.area_px, np.bincount(scene.labels.ravel().astype(np.int64))[table.ids])
    assert np.all((scene.class_ids >= 1) & (scene.class_ids <= 2))
    assert np.all((scene.scores >= 0) & (scene.scores <= 1))


def test_deterministic_and_batching_only_changes_float_rounding(model):
    a = predict_array(_image(seed=1), model, batch_size=2)
    b = predict_array(_image(seed=1), model, batch_size=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.scores, b.scores)
    # Another batch size may pick other conv kernels (float rounding): the foreground stays the same
    # almost everywhere even for this untrained model, whose outputs sit close to every threshold.
    c = predict_array(_image(seed=1), model, batch_size=5)
    assert np.mean((a.labels > 0) == (c.labels > 0)) > 0.98


def test_decode_threads_do_not_change_the_result(model):
    a = predict_array(_image(seed=4), model, batch_size=2)
    b = predict_array(_image(seed=4), model, batch_size=2, decode_workers=3)
    assert len(a) > 0
    for name in ("labels", "ids", "class_ids", "scores", "centroids_yx"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    with pytest.raises(SmallsegError, match="^decode_workers 0: must be a whole number from 1"):
        predict_array(_image(seed=4), model, decode_workers=0)


def test_nodata_pixels_never_belong_to_objects(model):
    image = _image(seed=2)
    valid = np.ones(image.shape[1:], bool)
    valid[:, :60] = False  # a nodata collar
    valid[100:, 120:] = False
    scene = predict_array(image, model, valid_mask=valid)
    assert len(scene) > 0
    assert not scene.labels[~valid].any()
    cy, cx = np.floor(scene.centroids_yx + 0.5).astype(int).T
    assert valid[np.clip(cy, 0, 149), np.clip(cx, 0, 169)].all()


def test_image_smaller_than_a_tile(model):
    scene = predict_array(_image(40, 30, seed=3), model)
    assert scene.labels.shape == (40, 30)


def test_clear_errors(model):
    with pytest.raises(SmallsegError, match="4 bands, the model expects 3"):
        predict_array(np.zeros((4, 64, 64), np.uint8), model)
    with pytest.raises(SmallsegError, match="smaller than the tile size"):
        plan_tiling(model, tile_size_px=32, overlap_px=40)


def test_options_object_and_keywords_are_the_same_call(model):
    """``predict_array(image, model, PredictOptions(...))`` == the same fields by keyword == keywords on top of an
    options object (the keyword wins)."""
    image = _image(seed=5)
    by_object = predict_array(image, model, PredictOptions(tile_size_px=64, overlap_px=20, batch_size=2))
    by_keywords = predict_array(image, model, tile_size_px=64, overlap_px=20, batch_size=2)
    on_top = predict_array(image, model, PredictOptions(tile_size_px=64, overlap_px=20, batch_size=5), batch_size=2)
    assert len(by_object) > 0
    for other in (by_keywords, on_top):
        for name in ("labels", "ids", "class_ids", "scores", "centroids_yx"):
            np.testing.assert_array_equal(getattr(by_object, name), getattr(other, name), err_msg=name)
    # Another overlap is another tiling: the options object did reach the tiler.
    assert not np.array_equal(predict_array(image, model, overlap_px=0).labels, by_object.labels)


def test_min_score_option_drops_low_scoring_objects(model):
    image = _image(seed=6)
    everything = predict_array(image, model, min_score=0.0)
    cut = float(np.median(everything.scores))
    confident = predict_array(image, model, min_score=cut)
    assert 0 < len(confident) < len(everything)
    assert confident.scores.min() >= cut


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), r"^batch_size 0: must be a whole number from 1 to 4096"),
    (dict(tile_size_px=8), r"^tile_size_px 8: must be a whole number of at least 16 px"),
    (dict(tile_size_px=64, overlap_px=64), r"^overlap_px 64: must be smaller than tile_size_px 64"),
    (dict(device="gpu0"), r"^device gpu0: use auto, cpu, cuda or cuda:N"),
    (dict(amp="yes"), r"^amp yes: must be True or False"),
    (dict(tta="rot"), r"^tta rot: use None, True or one of"),
    (dict(normalize="fixed", percentiles=(1, 99)), r"^percentiles 1,99: apply to percentile normalisation"),
    (dict(decode={"min_scroe": 0.2}), r"^decode min_scroe: unknown decode setting"),
    (dict(min_score=1.5), r"^min_score 1.5: must be between 0 and 1"),
])
def test_bad_options_are_refused_at_construction_with_python_names(kwargs, message):
    with pytest.raises(OptionError, match=message):
        PredictOptions(**kwargs)


def test_unknown_and_removed_keywords_are_one_line(model):
    with pytest.raises(SmallsegError, match=r"^predict_array: unknown option\(s\) tile_size; options of "
                                            r"PredictOptions: amp, batch_size"):
        predict_array(_image(), model, tile_size=64)
    # return_table changed the return type; the table is part of the result.
    with pytest.raises(SmallsegError, match="^predict_array: return_table was removed; .* result.objects"):
        predict_array(_image(), model, return_table=True)
    with pytest.raises(SmallsegError, match="options must be a PredictOptions, got dict"):
        predict_array(_image(), model, {"tile_size_px": 64})


def test_drop_invalid_keeps_ids_dense():
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 1
    labels[5:8, 5:8] = 2
    labels[0:2, 7:9] = 3
    inst = Instances(labels, np.array([1, 2, 3]), np.array([1, 2, 1], np.int32), np.array([.9, .8, .7], np.float32),
                     np.array([[1.5, 1.5], [6, 6], [0.5, 7.5]]))
    valid = np.ones((10, 10), bool)
    valid[1:3, 1:3] = False  # object 1 entirely invalid
    valid[7, 5:8] = False  # object 2 loses a row but keeps its centre
    out = drop_invalid(inst, valid)
    np.testing.assert_array_equal(out.ids, [1, 2])
    np.testing.assert_array_equal(out.class_ids, [2, 1])
    assert (out.labels == 1).sum() == 6 and (out.labels == 2).sum() == 4


def test_the_medical_model_on_microscopy_finds_nuclei_never_nodules():
    """PredictOptions.modality / by_modality (#13): the image's modality picks the model's classes, per tile
    before stitching, as tile-and-predict does; the pixels are the same, only the class of the odd object."""
    image = tifffile.imread(DATA_DIR / "dsb2018_nuclei_image.tif")  # fluorescence microscopy, no DICOM modality
    model = load_model("medical")
    nucleus, nodule = (model.config.class_names.index(n) + 1 for n in ("nucleus", "nodule"))
    restricted = predict_array(image, model)
    every_class = predict_array(image, model, by_modality=False)
    assert nodule in every_class.class_ids  # the class head does call something here a nodule
    assert len(restricted) == len(every_class) > 50 and set(restricted.class_ids.tolist()) == {nucleus}
    np.testing.assert_array_equal(restricted.labels, every_class.labels)
    sm = predict_array(image, model, modality="SM")  # DICOM slide microscopy: nuclei as well
    assert set(sm.class_ids.tolist()) <= {nucleus}


def test_forward_passes_on_a_cpu_stay_within_the_pass_pixel_budget(tiny_model):
    """batch_size=4 of 512² tiles on a CPU runs one tile per pass (4 x 256² px at most); 128² tiles keep 4."""
    from smallseg.pipeline.array import CPU_PASS_PX

    model = tiny_model("resnet18", semantic_bias=[-1.0, 1.0], classes=1, in_channels=1, max_distance_px=6,
                       tile_size_px=512)
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    image = np.random.default_rng(0).random((1, 600, 600)).astype(np.float32)
    try:
        big = predict_array(image, model, tile_size_px=512, batch_size=4)
        big_calls, seen[:] = list(seen), []
        predict_array(image, model, tile_size_px=128, batch_size=4)
        small_calls = list(seen)
    finally:
        hook.remove()
    assert all(b * h * w <= CPU_PASS_PX for b, _, h, w in big_calls) and {s[0] for s in big_calls} == {1}
    assert max(s[0] for s in small_calls) == 4
    assert np.array_equal(big.labels, predict_array(image, model, tile_size_px=512, batch_size=1).labels)
