"""Realistic lung anatomy in the synthetic CT: vessels, airways, fissures; unlabelled; nodules unchanged."""

import numpy as np
import pytest
from scipy import ndimage

from smallseg.data.lung import LungAnatomy
from smallseg.data.medical import make_ct_volume
from smallseg.errors import SmallsegError

SIZE = (128, 128, 24)
BARE = LungAnatomy(hilar_trees=0, peripheral_trees=0, airways=0, fissures=False, pleura=False, gravity_hu=(0, 0),
                   noise_scale=(1, 1))


@pytest.fixture(scope="module")
def volumes():
    real = make_ct_volume(SIZE, seed=11, nodule_count=4, diameter_range_mm=(4, 10), anatomy="realistic")
    bare = make_ct_volume(SIZE, seed=11, nodule_count=4, diameter_range_mm=(4, 10), anatomy=BARE)
    classic = make_ct_volume(SIZE, seed=11, nodule_count=4, diameter_range_mm=(4, 10))
    return real, bare, classic


def test_realistic_anatomy_is_deterministic():
    a = make_ct_volume((64, 64, 8), seed=5, nodule_count=1, diameter_range_mm=(3, 4), anatomy="realistic")
    b = make_ct_volume((64, 64, 8), seed=5, nodule_count=1, diameter_range_mm=(3, 4), anatomy="realistic")
    c = make_ct_volume((64, 64, 8), seed=6, nodule_count=1, diameter_range_mm=(3, 4), anatomy="realistic")
    assert np.array_equal(a.hu_zyx, b.hu_zyx) and np.array_equal(a.labels_zyx, b.labels_zyx)
    assert not np.array_equal(a.hu_zyx, c.hu_zyx)


def test_anatomy_leaves_the_nodules_and_their_labels_unchanged(volumes):
    real, bare, _ = volumes
    assert len(real.nodules) == len(bare.nodules) == 4
    assert np.array_equal(real.labels_zyx, bare.labels_zyx)
    assert [n.center_lps_mm for n in real.nodules] == [n.center_lps_mm for n in bare.nodules]
    assert [n.volume_voxels for n in real.nodules] == [n.volume_voxels for n in bare.nodules]


def lung_of(bare_hu):
    return ndimage.binary_erosion((bare_hu > -960) & (bare_hu < -650), iterations=1)


def test_vessels_are_many_bright_dots_per_slice_and_never_labelled(volumes):
    real, bare, classic = volumes
    hu, hu_bare, labels = real.hu_zyx, bare.hu_zyx, real.labels_zyx
    lung = lung_of(hu_bare)
    vessel = lung & (hu > -450) & (hu_bare < -650)  # bright where the bare lung is air-like
    assert vessel.sum() > 2000
    assert not labels[vessel].any()  # vessels are not nodules
    mid = SIZE[2] // 2

    def dots(volume_hu):
        return ndimage.label(lung[mid] & (volume_hu[mid] > -450) & (labels[mid] == 0))[1]

    # many separate cross-sections in one axial slice (the classic phantom had a handful)
    assert dots(hu) >= 12 and dots(hu) > 2 * dots(classic.hu_zyx)
    # in-plane sizes from about one voxel to several mm: vessel calibres fall along the trees
    sizes = np.bincount(ndimage.label(vessel[mid])[0].ravel())[1:]
    assert sizes.min() <= 4 and sizes.max() >= 30


def test_airways_fissures_and_noise(volumes):
    real, bare, _ = volumes
    hu, hu_bare = real.hu_zyx.astype(float), bare.hu_zyx.astype(float)
    lung = lung_of(hu_bare)
    lumen = lung & (hu < -975) & (hu_bare > -925)  # airway lumen: air inside the lung
    assert lumen.sum() > 20
    wall = ndimage.binary_dilation(lumen, iterations=2) & ~lumen & (hu > hu_bare + 150)
    assert wall.sum() > lumen.sum() * 0.3  # a brighter wall around the lumen
    # the realistic volume differs from the bare one inside the lungs far more than noise alone would
    assert np.abs(hu - hu_bare)[lung].mean() > 25


def test_anatomy_options_are_validated():
    with pytest.raises(SmallsegError, match="peripheral_trees"):
        LungAnatomy(peripheral_trees=-1)
    with pytest.raises(SmallsegError, match="noise_scale"):
        LungAnatomy(noise_scale=(2.0, 1.0))
    with pytest.raises(SmallsegError, match="anatomy"):
        make_ct_volume((48, 48, 2), seed=1, nodule_count=0, anatomy="fancy")
    with pytest.raises(SmallsegError, match="unknown"):
        LungAnatomy.resolve({"vessels": 3})
    assert LungAnatomy.resolve({"airways": 1, "gravity_hu": [10, 20]}) == LungAnatomy(airways=1,
                                                                                       gravity_hu=(10, 20))


def test_training_slices_from_realistic_ct_label_only_nodules():
    from smallseg.train.data import synthetic_images

    items = synthetic_images("ct", count=1, size=96, seed=3, slices=12, nodule_count=2, anatomy="realistic")
    assert items and all(it.image.dtype == np.float32 and it.image.shape == (96, 96, 1) for it in items)
    labelled = [it for it in items if it.instances.max() > 0]
    assert labelled and len(labelled) <= len(items)
    for it in labelled:
        assert set(np.unique(it.classes)) <= {0, 1}


def test_training_slices_with_slice_context_hold_their_neighbours_in_order():
    """slice_context=k: channel k is the slice itself (as without context), channel k+d the slice d further up,
    clamped at the volume's ends: what predict_volume gives a 2.5-D model."""
    from smallseg.data.medical import make_ct_volume
    from smallseg.normalize import CT_WINDOWS
    from smallseg.train.data import synthetic_images

    kwargs = dict(count=1, size=64, seed=4, slices=6, nodule_count=2, anatomy="realistic")
    plain = synthetic_images("ct", **kwargs)
    context = synthetic_images("ct", slice_context=2, **kwargs)
    raw = synthetic_images("ct", slice_context=2, raw=True, **kwargs)
    assert [it.name for it in plain] == [it.name for it in context]
    hu = make_ct_volume((64, 64, 6), seed=4, nodule_count=2, anatomy="realistic").hu_zyx
    lung = CT_WINDOWS["lung_nodule"]
    for p, c, r in zip(plain, context, raw):
        z = int(p.name.rsplit(" ", 1)[1])
        assert c.image.shape == (64, 64, 5) and np.array_equal(c.image[..., 2], p.image[..., 0])
        assert np.array_equal(c.instances, p.instances)
        for channel, dz in enumerate(range(-2, 3)):
            neighbour = hu[min(max(z + dz, 0), 5)]
            assert np.array_equal(r.image[..., channel], neighbour)
            assert np.array_equal(c.image[..., channel], lung.map_unit(neighbour[None])[0])
