"""The ``realistic`` nuclei style: deterministic, valid labels, and the properties real images have."""

import numpy as np
import pytest
from scipy import ndimage

from smallseg.data.microscopy import make_nuclei_image
from smallseg.errors import SmallsegError

SEEDS = range(20, 26)


@pytest.fixture(scope="module")
def images():
    return [make_nuclei_image(192, 192, seed=s, mean_diameter_px=16, style="realistic") for s in SEEDS]


def test_realistic_is_deterministic_and_classic_stays_the_default():
    a = make_nuclei_image(128, 128, seed=3, style="realistic")
    b = make_nuclei_image(128, 128, seed=3, style="realistic")
    c = make_nuclei_image(128, 128, seed=4, style="realistic")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    classic = make_nuclei_image(128, 128, seed=3)
    assert np.array_equal(classic.image, make_nuclei_image(128, 128, seed=3, style="classic").image)
    assert not np.array_equal(classic.labels, a.labels)
    with pytest.raises(SmallsegError, match="style"):
        make_nuclei_image(64, 64, seed=1, style="photoreal")


def test_labels_are_dense_connected_and_match_the_table(images):
    for item in images:
        ids = np.unique(item.labels)[1:]
        assert np.array_equal(ids, np.arange(1, len(ids) + 1)) and len(ids) >= 10
        for k, sl in enumerate(ndimage.find_objects(item.labels), start=1):
            assert ndimage.label(item.labels[sl] == k)[1] == 1
        assert np.array_equal(np.bincount(item.labels.ravel())[1:], item.nuclei.area_px)
    u8 = make_nuclei_image(128, 128, seed=2, style="realistic", dtype="uint8", mean_diameter_px=10)
    assert u8.image.dtype == np.uint8 and u8.image.max() > 150


def test_brightness_varies_several_fold_and_mitoses_are_small_bright_and_elongated(images):
    brightness = np.concatenate([it.nuclei.brightness for it in images])
    p5, p95 = np.percentile(brightness, [5, 95])
    assert p95 / p5 > 2.5
    mitoses = 0
    for it in images:
        t = it.nuclei
        a, b = t.semi_axes_px[:, 0], t.semi_axes_px[:, 1]
        small = np.sqrt(a * b) < 0.6 * np.median(np.sqrt(a * b))
        bright = t.brightness > np.percentile(t.brightness, 75)
        elongated = np.maximum(a, b) / np.minimum(a, b) > 1.8
        mitoses += int((small & bright & elongated).sum())
    assert mitoses >= 3
    assert sum(int((~it.nuclei.in_focus).sum()) for it in images) >= 5


def test_texture_noise_illumination_and_debris(images):
    textures, noise, ramps, debris = [], [], [], 0
    for it in images:
        img = it.image.astype(np.float64)
        lab = it.labels.astype(np.int64)
        inner = np.where(ndimage.grey_erosion(lab, size=3) == lab, lab, 0)
        ids = np.unique(inner)[1:]
        bg_level = np.median(img[lab == 0])
        mean = np.asarray(ndimage.mean(img, inner, ids)) - bg_level
        textures.append(np.median(np.asarray(ndimage.standard_deviation(img, inner, ids)) / np.maximum(mean, 1e-6)))
        far = ~ndimage.binary_dilation(lab > 0, iterations=6)
        noise.append(np.std(img[far] - ndimage.median_filter(img, 5)[far]))
        # uneven illumination: the four quadrants' background medians differ
        h, w = img.shape
        quads = [np.median(img[r:r + h // 2, c:c + w // 2][far[r:r + h // 2, c:c + w // 2]])
                 for r in (0, h // 2) for c in (0, w // 2)]
        ramps.append((max(quads) - min(quads)) / max(np.median(quads) - 100.0, 1.0))
        # debris: bright unlabelled specks well away from any nucleus
        debris += int((img[far] > np.percentile(img[lab > 0], 50)).sum())
    assert np.median(textures) > 0.12  # chromatin grain and foci (classic: ~0.1)
    assert max(noise) / min(noise) > 2  # photon level and read noise vary per image
    assert max(ramps) > 0.2
    assert debris > 0


def test_touching_share_and_spacing_are_those_of_real_images(images):
    """Real DSB2018 / BBBC007 / laptrack labels: 12-29 % of nuclei share an outline, nearest-neighbour
    centre distance median 1.14-1.53 diameters (benchmarks/compare_synthetic_statistics_medical.py)."""
    from scipy.spatial import cKDTree

    shares, nn = [], []
    for it in images:
        lab = it.labels.astype(np.int64)
        touching = set()
        for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])):
            both = (a > 0) & (b > 0) & (a != b)
            touching |= set(a[both].tolist()) | set(b[both].tolist())
        n = int(lab.max())
        shares.append(len(touching) / n)
        centres = np.array(ndimage.center_of_mass(np.ones(lab.shape), lab, np.arange(1, n + 1)))
        diam = 2 * np.sqrt(np.median(it.nuclei.area_px) / np.pi)
        nn.append(np.median(cKDTree(centres).query(centres, k=2)[0][:, 1]) / diam)
    assert 0.1 < np.median(shares) < 0.5
    assert 1.0 < np.median(nn) < 1.6
