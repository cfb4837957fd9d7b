"""Augmentation keeps labels exact: ids stay ids, every object keeps one class, Mosaic keeps ids unique."""

import numpy as np
import pytest

from smallseg.train.augment import AugmentConfig, augment_sample, build_augment, mosaic


def _sample(seed=0, size=96, n=12):
    rng = np.random.default_rng(seed)
    image = rng.random((size, size, 3), dtype=np.float32)
    instances = np.zeros((size, size), np.int32)
    classes = np.zeros((size, size), np.int32)
    for k in range(1, n + 1):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(2, 8, 2)
        instances[y:y + h, x:x + w] = k
        classes[y:y + h, x:x + w] = 1 + k % 2
    return image, instances, classes


def _augment_twice(config, seed, image, instances, classes):
    """``augment_sample`` through two pipelines built with the same seed: both outputs must be equal."""
    a = augment_sample(build_augment(config, seed=seed), image, instances, classes)
    b = augment_sample(build_augment(config, seed=seed), image, instances, classes)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    return a


def _assert_labels_exact(instances, classes, out_inst, out_cls):
    """Nearest-neighbour resampling: no id or class is invented, every surviving object has exactly the class
    it had, and background stays background in both label images."""
    assert set(np.unique(out_inst)) <= set(np.unique(instances))
    original_class = {k: int(classes[instances == k][0]) for k in np.unique(instances) if k}
    for k in np.unique(out_inst):
        if k:
            assert set(np.unique(out_cls[out_inst == k])) == {original_class[k]}
    assert np.all((out_inst == 0) == (out_cls == 0))


def test_same_seed_same_output_and_labels_stay_labels():
    image, instances, classes = _sample()
    config = AugmentConfig(crop_size=64, scale_range=(0.6, 1.6), mosaic_p=0)
    out_img, out_inst, out_cls = _augment_twice(config, 3, image, instances, classes)
    assert out_img.shape == (64, 64, 3) and out_img.dtype == np.float32
    assert out_img.min() >= 0 and out_img.max() <= 1
    _assert_labels_exact(instances, classes, out_inst, out_cls)


def test_geometry_only_pipeline_is_a_pure_rearrangement():
    image, instances, classes = _sample(1, size=64)
    config = AugmentConfig(crop_size=64, scale_range=(1.0, 1.0), brightness=0, contrast=0,
                           gamma_range=(100.0, 100.0), noise_std=0, blur_p=0)
    out_img, out_inst, _ = augment_sample(build_augment(config, seed=5), image, instances, classes)
    # Flips and 90-degree turns only permute pixels: the image and label histograms are unchanged,
    # and the image moves with the labels.
    np.testing.assert_array_equal(np.sort(out_img.ravel()), np.sort(image.ravel()))
    np.testing.assert_array_equal(np.bincount(out_inst.ravel()), np.bincount(instances.ravel()))
    for k in range(1, 5):
        np.testing.assert_array_equal(np.sort(out_img[out_inst == k].ravel()), np.sort(image[instances == k].ravel()))


def test_mosaic_renumbers_ids_uniquely_and_keeps_classes():
    samples = [_sample(s) for s in range(4)]
    rng = np.random.default_rng(0)
    image, instances, classes = mosaic(samples, 80, rng)
    assert image.shape == (80, 80, 3) and instances.shape == classes.shape == (80, 80)
    ids = np.unique(instances)
    ids = ids[ids != 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # dense 1..N
    assert np.all((instances == 0) == (classes == 0))
    for k in ids:
        assert len(np.unique(classes[instances == k])) == 1
    # Ids from the four sources never merge: there are at least as many objects as non-empty quadrants.
    assert len(ids) >= 4


def test_mosaic_quadrants_are_crops_of_the_inputs():
    samples = [_sample(s) for s in range(4)]
    image, _, _ = mosaic(samples, 80, np.random.default_rng(1))
    # The top-left pixel comes from sample 0, the bottom-right from sample 3.
    assert np.any(np.all(samples[0][0].reshape(-1, 3) == image[0, 0], axis=1))
    assert np.any(np.all(samples[3][0].reshape(-1, 3) == image[-1, -1], axis=1))


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="unknown augment option"):
        AugmentConfig.from_dict({"crop_sise": 64})


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_domain_randomisation_keeps_labels_exact_for_any_band_count(bands):
    image, instances, classes = _sample(2, size=96, n=20)
    image = np.repeat(image[:, :, :1], bands, axis=2) * np.linspace(0.6, 1.0, bands, dtype=np.float32)
    config = AugmentConfig(crop_size=64, scale_range=(0.8, 1.25), mosaic_p=0, rotate_p=1.0, blur_p=1.0,
                           blur_sigma=(0.5, 1.5), jpeg_p=1.0, jpeg_quality=(30, 60), band_gain=0.2,
                           downscale_p=1.0, noise_std=0.03)
    out_img, out_inst, out_cls = _augment_twice(config, 4, image, instances, classes)
    assert out_img.shape == (64, 64, bands) and 0 <= out_img.min() and out_img.max() <= 1
    _assert_labels_exact(instances, classes, out_inst, out_cls)
    # the photometric part really changed the pixels (not a pure rearrangement)
    assert not np.array_equal(np.sort(out_img.ravel()), np.sort(image[:64, :64].ravel()))


def test_grey_makes_bands_equal_and_bad_domain_options_are_refused():
    image, instances, classes = _sample(3, size=64)
    config = AugmentConfig(crop_size=64, scale_range=(1.0, 1.0), mosaic_p=0, grey_p=1.0, brightness=0,
                           contrast=0, gamma_range=(100.0, 100.0), noise_std=0, blur_p=0)
    out_img, _, _ = augment_sample(build_augment(config, seed=1), image, instances, classes)
    assert np.allclose(out_img[..., 0], out_img[..., 1]) and np.allclose(out_img[..., 1], out_img[..., 2])
    with pytest.raises(ValueError, match="jpeg_p"):
        AugmentConfig(jpeg_p=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        AugmentConfig.from_dict({"jpeg_quality": [90, 20]})
    with pytest.raises(ValueError, match="unknown augment"):
        AugmentConfig.from_dict({"jpg_p": 0.5})
