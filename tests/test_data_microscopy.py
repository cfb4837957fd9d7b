"""Synthetic nuclei: determinism, label TIFF round trip, unique connected ids, touching nuclei."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from smallseg.data.microscopy import make_nuclei_image, write_nuclei_image
from smallseg.errors import SmallsegError


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei_image(256, 256, seed=5)


def test_same_seed_same_image_different_seed_different(nuclei):
    again = make_nuclei_image(256, 256, seed=5)
    other = make_nuclei_image(256, 256, seed=6)
    assert np.array_equal(nuclei.image, again.image) and np.array_equal(nuclei.labels, again.labels)
    assert not np.array_equal(nuclei.labels, other.labels)


def test_ids_are_unique_connected_and_match_the_table(nuclei):
    labels = nuclei.labels
    ids = np.unique(labels)[1:]
    assert labels.dtype == np.uint16 and len(ids) > 20
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # dense, no id reused
    assert np.array_equal(nuclei.nuclei.id, ids)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        _, pieces = ndimage.label(labels[sl] == k)  # 4-connectivity
        assert pieces == 1
    assert np.array_equal(np.bincount(labels.ravel())[1:], nuclei.nuclei.area_px)


def test_touching_nuclei_present_and_nuclei_brighter_than_background(nuclei):
    labels = nuclei.labels.astype(np.int64)
    touching = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        both = (a > 0) & (b > 0) & (a != b)
        touching |= set(zip(a[both].tolist(), b[both].tolist()))
    assert len(touching) >= 5
    inside = nuclei.image[labels > 0].astype(float)
    background = nuclei.image[ndimage.binary_dilation(labels > 0, iterations=4) == 0].astype(float)
    assert np.median(inside) > 2 * np.median(background)
    assert (~nuclei.nuclei.in_focus).any()  # some out-of-focus nuclei


def test_label_tiff_round_trip(nuclei, tmp_path):
    paths = write_nuclei_image(nuclei, tmp_path / "n")
    assert np.array_equal(tifffile.imread(paths["labels"]), nuclei.labels)
    assert np.array_equal(tifffile.imread(paths["image"]), nuclei.image)
    assert paths["csv"].read_text().count("\n") == len(nuclei.nuclei) + 1
    small = make_nuclei_image(64, 64, seed=1, dtype="uint8")
    assert small.image.dtype == np.uint8
    with pytest.raises(SmallsegError, match="dtype"):
        make_nuclei_image(64, 64, seed=1, dtype="float32")
