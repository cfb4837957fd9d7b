"""Synthetic CT: DICOM series round trip with SimpleITK, NIfTI labels, nodule volumes against geometry."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from smallseg.data.medical import make_ct_volume, read_dicom_series, write_ct_case, write_dicom_series
from smallseg.errors import SmallsegError

SPACING = (0.7, 0.7, 1.25)
ROT30 = (math.cos(math.pi / 6), -math.sin(math.pi / 6), 0, math.sin(math.pi / 6), math.cos(math.pi / 6), 0, 0, 0, 1)


@pytest.fixture(scope="module")
def ct():
    return make_ct_volume((160, 160, 40), seed=4, spacing_mm=SPACING, nodule_count=6,
                          diameter_range_mm=(3, 10), origin_mm=(-60.0, -80.0, 100.0), direction=ROT30)


def test_same_seed_same_volume_different_seed_different():
    a = make_ct_volume((64, 64, 8), seed=1, nodule_count=1, diameter_range_mm=(3, 4))
    b = make_ct_volume((64, 64, 8), seed=1, nodule_count=1, diameter_range_mm=(3, 4))
    c = make_ct_volume((64, 64, 8), seed=2, nodule_count=1, diameter_range_mm=(3, 4))
    assert np.array_equal(a.hu_zyx, b.hu_zyx) and np.array_equal(a.labels_zyx, b.labels_zyx)
    assert not np.array_equal(a.hu_zyx, c.hu_zyx)


def test_phantom_is_chest_like_hu(ct):
    hu = ct.hu_zyx
    assert hu.dtype == np.int16 and ct.image.GetPixelID() == sitk.sitkInt16
    assert hu.min() >= -1024 and hu.max() > 300  # air and bone
    lung_share = ((hu > -950) & (hu < -750)).mean()
    assert 0.1 < lung_share < 0.6  # lungs near -850 HU are a large part of the slab
    assert ((hu > -150) & (hu < 100)).mean() > 0.1  # soft tissue and fat
    assert len(ct.nodules) == 6


def test_dicom_series_reads_back_with_same_geometry_order_and_hu(ct, tmp_path):
    files = write_dicom_series(ct.image, tmp_path / "series", seed=9)
    assert len(files) == 40 and all(f.exists() for f in files)
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(tmp_path / "series"))
    assert [str(f) for f in files] == list(names)  # GDCM's geometric order is our slice order
    reader.SetFileNames(names)
    back = reader.Execute()
    assert np.allclose(back.GetSpacing(), SPACING, atol=1e-6)
    assert np.allclose(back.GetOrigin(), (-60.0, -80.0, 100.0), atol=1e-4)
    assert np.allclose(back.GetDirection(), ROT30, atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back), ct.hu_zyx)
    # per-file tags
    uids = set()
    z_prev = -np.inf
    for k, name in enumerate(names):
        r = sitk.ImageFileReader()
        r.SetFileName(name)
        r.ReadImageInformation()
        tag = r.GetMetaData
        assert tag("0008|0060").strip() == "CT"
        assert int(tag("0020|0013")) == k + 1
        ipp = [float(v) for v in tag("0020|0032").split("\\")]
        assert np.allclose(ipp, ct.image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)
        assert ipp[2] > z_prev
        z_prev = ipp[2]
        assert np.allclose([float(v) for v in tag("0020|0037").split("\\")],
                           [ROT30[0], ROT30[3], ROT30[6], ROT30[1], ROT30[4], ROT30[7]], atol=1e-6)
        assert np.allclose([float(v) for v in tag("0028|0030").split("\\")], (0.7, 0.7))
        assert float(tag("0018|0050")) == pytest.approx(1.25)
        assert float(tag("0028|1052")) == 0 and float(tag("0028|1053")) == 1
        uids.add((tag("0020|000d"), tag("0020|000e"), tag("0020|0052")))
        assert tag("0008|0018").strip().startswith("2.25.")
    assert len(uids) == 1  # one study, series and frame of reference


def test_dicom_bytes_are_reproducible(tmp_path):
    v = make_ct_volume((48, 48, 3), seed=3, nodule_count=0)
    a = write_dicom_series(v.image, tmp_path / "a", seed=1)
    b = write_dicom_series(v.image, tmp_path / "b", seed=1)
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    with pytest.raises(SmallsegError, match="not empty"):
        write_dicom_series(v.image, tmp_path / "a")


def test_nifti_labels_and_nodule_volumes_match_the_analytic_ellipsoids(ct, tmp_path):
    paths = write_ct_case(ct, tmp_path / "case", seed=4)
    labels = sitk.ReadImage(str(paths["labels"]))
    assert np.allclose(labels.GetSpacing(), SPACING, atol=1e-5)
    assert np.allclose(labels.GetOrigin(), ct.image.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), ct.image.GetDirection(), atol=1e-5)
    lab = sitk.GetArrayFromImage(labels)
    assert np.array_equal(lab, ct.labels_zyx)
    table = json.loads(paths["json"].read_text())["nodules"]
    assert sorted(np.unique(lab)[1:]) == [n["id"] for n in table]
    voxel_mm3 = np.prod(SPACING)
    # A voxel counts when its centre is inside the ellipsoid E. With h = half the voxel diagonal, the
    # counted voxels cover (1 - h/a_min) E and lie inside (1 + h/a_min) E (E is convex and contains a
    # ball of radius a_min), so V (1 -+ h/a_min)^3 bound the voxel volume rigorously.
    h = 0.5 * math.sqrt(sum(s * s for s in SPACING))
    total_voxel, total_analytic = 0.0, 0.0
    for n in table:
        a, b, c = n["semi_axes_mm"]
        analytic = 4 / 3 * math.pi * a * b * c
        assert n["volume_mm3"] == pytest.approx(analytic)
        assert 3 <= n["diameter_mm"] <= 10
        counted = (lab == n["id"]).sum() * voxel_mm3
        assert counted == pytest.approx(n["volume_voxels_mm3"])
        t = h / min(a, b, c)
        assert analytic * max(1 - t, 0) ** 3 <= counted <= analytic * (1 + t) ** 3
        total_voxel += counted
        total_analytic += analytic
        # centre: the label's centre of mass, through the image geometry, lands on the stated LPS centre
        zyx = np.argwhere(lab == n["id"]).mean(0)
        com = labels.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))
        assert np.linalg.norm(np.subtract(com, n["center_lps_mm"])) < 2 * h
    # Counting error has random sign (centres are uniform in voxel phase), so the sum is much closer than
    # the per-nodule bound: 10 % over six nodules of 3-10 mm.
    assert abs(total_voxel - total_analytic) / total_analytic < 0.10
    assert read_dicom_series(paths["dicom"]).GetSize() == ct.image.GetSize()
