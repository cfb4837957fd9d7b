"""Medical I/O on real DICOM files (pydicom's test files) and on DICOM series written here with SimpleITK."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from smallseg.errors import SmallsegError
from smallseg.io.medical import (
    PRESETS,
    IntensityPreset,
    Volume,
    find_series,
    from_sitk,
    get_preset,
    index_to_lps_mm,
    lps_mm_to_index,
    read_volume,
    to_sitk,
    write_labels_nifti,
    write_volume,
)
from conftest import PYDICOM_DATA as DATA  # tests/ is on sys.path under pytest
from medical_helpers import random_hu, rotation, write_series

CT_SMALL = DATA / "CT_small.dcm"
MR_SMALL = DATA / "MR_small.dcm"
SEG = DATA / "liver_1frame.dcm"
TRUNCATED = DATA / "MR_truncated.dcm"
NO_META = DATA / "no_meta.dcm"


# ---------------------------------------------------------------------------------------------------------------
# independent helpers: raw DICOM bytes (the series writer is medical_helpers.write_series)
# ---------------------------------------------------------------------------------------------------------------


def raw_element(path: Path, group: int, elem: int) -> bytes:
    """Value of an explicit-VR-little-endian element, found by its tag bytes (test oracle, not smallseg code)."""
    data = path.read_bytes()
    i = data.find(struct.pack("<HH", group, elem))
    assert i >= 0, f"tag ({group:04x},{elem:04x}) not in {path.name}"
    if data[i + 4: i + 6] in (b"OB", b"OW"):
        (n,) = struct.unpack_from("<I", data, i + 8)
        return data[i + 12: i + 12 + n]
    (n,) = struct.unpack_from("<H", data, i + 6)
    return data[i + 8: i + 8 + n]


def raw_floats(path: Path, group: int, elem: int) -> list[float]:
    return [float(v) for v in raw_element(path, group, elem).decode().strip(" \x00").split("\\")]


def read_volume_error(*args, **kwargs) -> str:
    """The message of the SmallsegError that ``read_volume(*args, **kwargs)`` raises, checked to be one line."""
    with pytest.raises(SmallsegError) as err:
        read_volume(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------------------------------


def test_ct_small_reads_one_int16_slice_in_hu_with_its_tag_geometry():
    vol = read_volume(CT_SMALL)
    assert vol.array.shape == (1, 128, 128)
    assert vol.array.dtype == np.int16
    # Pixel values: stored int16 + Rescale Intercept (slope 1), decoded from the raw file bytes.
    stored = np.frombuffer(raw_element(CT_SMALL, 0x7FE0, 0x0010), dtype="<i2").reshape(128, 128)
    intercept = raw_floats(CT_SMALL, 0x0028, 0x1052)[0]
    slope = raw_floats(CT_SMALL, 0x0028, 0x1053)[0]
    assert slope == 1.0
    np.testing.assert_array_equal(vol.array[0], stored.astype(np.int32) + int(intercept))
    row_mm, col_mm = raw_floats(CT_SMALL, 0x0028, 0x0030)  # Pixel Spacing = (row spacing, column spacing)
    assert vol.spacing_zyx_mm[1:] == pytest.approx((row_mm, col_mm))
    assert vol.origin_lps_mm == pytest.approx(raw_floats(CT_SMALL, 0x0020, 0x0032))
    assert vol.direction_matrix[:, :2].T.ravel() == pytest.approx(raw_floats(CT_SMALL, 0x0020, 0x0037))
    assert vol.modality == "CT"
    assert vol.series_uid == raw_element(CT_SMALL, 0x0020, 0x000E).rstrip(b"\x00").decode()
    assert vol.meta["RescaleIntercept"] == "-1024"
    assert vol.warnings == []


def test_mr_small_reads_raw_values():
    vol = read_volume(MR_SMALL)
    assert vol.array.shape == (1, 64, 64)
    stored = np.frombuffer(raw_element(MR_SMALL, 0x7FE0, 0x0010), dtype="<i2").reshape(64, 64)
    np.testing.assert_array_equal(vol.array[0], stored)
    assert vol.modality == "MR"
    assert vol.spacing_zyx_mm[1:] == pytest.approx(raw_floats(MR_SMALL, 0x0028, 0x0030))


def test_no_meta_file_gives_one_clear_error_but_a_clean_headerless_dataset_reads(tmp_path):
    # The shared no_meta.dcm starts with a stray byte before its first element: GDCM cannot parse it.
    msg = read_volume_error(NO_META)
    assert "no_meta.dcm" in msg and "DICM" in msg
    # A well-formed data set without the Part-10 header (CT_small minus preamble + file meta) is read by GDCM.
    data = CT_SMALL.read_bytes()
    (meta_len,) = struct.unpack_from("<I", data, 132 + 8)  # (0002,0000) group length value
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(data[132 + 12 + meta_len:])
    vol, ref = read_volume(bare), read_volume(CT_SMALL)
    np.testing.assert_array_equal(vol.array, ref.array)
    assert vol.origin_lps_mm == ref.origin_lps_mm
    # find_series lists the broken copy as not DICOM, the clean one as an image series
    shutil.copy(NO_META, tmp_path / "no_meta.dcm")
    kinds = {Path(s.files[0]).name: s.kind for s in find_series(tmp_path)}
    assert kinds == {"bare.dcm": "image", "no_meta.dcm": "not_dicom"}


def test_truncated_file_is_one_clear_error_naming_it(tmp_path):
    msg = read_volume_error(TRUNCATED)
    assert "MR_truncated.dcm" in msg and "truncated" in msg
    # the declared vs available byte counts are the file's real ones
    data = TRUNCATED.read_bytes()
    i = data.find(b"\xe0\x7f\x10\x00")
    (declared,) = struct.unpack_from("<I", data, i + 8)
    assert f"declares {declared} bytes but only {len(data) - i - 12} remain" in msg


def test_seg_is_skipped_by_find_series_and_refused_by_read_volume(tmp_path):
    shutil.copy(SEG, tmp_path / "seg.dcm")
    (entry,) = find_series(tmp_path)
    assert entry.kind == "not_image" and not entry.is_image
    assert "Segmentation Storage" in entry.reason
    with pytest.raises(SmallsegError, match=r"seg\.dcm is a DICOM Segmentation Storage object, not an image"):
        read_volume(tmp_path / "seg.dcm")
    with pytest.raises(SmallsegError, match="no DICOM image series found under"):
        read_volume(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# series discovery
# ---------------------------------------------------------------------------------------------------------------


def test_find_series_in_a_mixed_tree(tmp_path):
    uid_a, uid_b = "1.2.826.0.1.3680043.9.7.101", "1.2.826.0.1.3680043.9.7.202"
    mixed = tmp_path / "mixed"
    files_a = write_series(mixed, random_hu((5, 12, 10), 1), series_uid=uid_a, prefix="a")
    # series B in the same folder, file names in reverse slice order so sorting by name would be wrong
    files_b = write_series(mixed, random_hu((4, 8, 9), 2), series_uid=uid_b, prefix="b",
                           direction=rotation(0.0, 0.0, 0.3), spacing_xyz=(0.5, 0.5, 3.0))
    for k, p in enumerate(reversed(files_b)):
        p.rename(p.with_name(f"b_{k}.dcm"))
    (tmp_path / "seg").mkdir()
    shutil.copy(SEG, tmp_path / "seg" / "liver_seg.dcm")
    (tmp_path / "broken").mkdir()
    shutil.copy(TRUNCATED, tmp_path / "broken" / "mr_cut.dcm")
    (tmp_path / "notes.txt").write_text("not an image\n")

    entries = find_series(tmp_path)
    images = {e.series_uid: e for e in entries if e.is_image}
    assert set(images) == {uid_a, uid_b}
    assert images[uid_a].n_slices == 5 and images[uid_a].slice_shape_yx == (12, 10)
    assert images[uid_b].n_slices == 4 and images[uid_b].slice_shape_yx == (8, 9)
    assert list(images[uid_a].files) == [str(p) for p in files_a]
    # B's files are ordered by position (b_3 is slice 0), not by name
    assert [Path(f).name for f in images[uid_b].files] == ["b_3.dcm", "b_2.dcm", "b_1.dcm", "b_0.dcm"]
    assert np.diff(images[uid_b].slice_positions_mm) == pytest.approx([3.0] * 3, abs=1e-4)
    assert images[uid_a].modality == "CT" and images[uid_a].description == "synthetic a"

    others = {Path(e.files[0]).name: e for e in entries if not e.is_image}
    assert set(others) == {"liver_seg.dcm", "mr_cut.dcm", "notes.txt"}
    assert others["liver_seg.dcm"].kind == "not_image" and "Segmentation" in others["liver_seg.dcm"].reason
    assert others["mr_cut.dcm"].kind == "unreadable" and "truncated" in others["mr_cut.dcm"].reason
    assert others["notes.txt"].kind == "not_dicom"

    # two series in one folder: a clear error listing both UIDs and how to pick
    msg = read_volume_error(mixed)
    assert uid_a in msg and uid_b in msg and "series_uid=" in msg
    # the whole tree also holds a broken file: refuse to guess, name it
    with pytest.raises(SmallsegError, match="mr_cut.dcm"):
        read_volume(tmp_path)
    vol = read_volume(tmp_path, series_uid=uid_b)
    assert vol.array.shape == (4, 8, 9) and vol.series_uid == uid_b
    np.testing.assert_array_equal(vol.array, random_hu((4, 8, 9), 2))
    # a SeriesInfo and an explicit (shuffled) file list read the same
    np.testing.assert_array_equal(read_volume(images[uid_b]).array, vol.array)
    np.testing.assert_array_equal(read_volume(list(reversed(images[uid_b].files))).array, vol.array)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SmallsegError, match=f"no DICOM image series found under {tmp_path}"):
        read_volume(tmp_path)
    with pytest.raises(SmallsegError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")


def test_truncated_slice_inside_a_series_names_the_file(tmp_path):
    files = write_series(tmp_path, random_hu((5, 16, 16)))
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-100])
    # The other four still form a stack: the truncated file is dropped, named in a warning (and the gap noted).
    vol = read_volume(tmp_path)
    assert vol.array.shape == (4, 16, 16)
    dropped = [w for w in vol.warnings if "dropped 1 unreadable file" in w]
    assert len(dropped) == 1 and files[2].name in dropped[0] and "truncated" in dropped[0]
    assert any("missing slice" in w for w in vol.warnings)


def test_duplicate_positions_are_not_stacked(tmp_path):
    write_series(tmp_path, random_hu((3, 8, 8), 1), prefix="e1_")
    write_series(tmp_path, random_hu((3, 8, 8), 2), prefix="e2_")  # same UID and positions: a second echo
    (entry,) = find_series(tmp_path)
    assert entry.kind == "unreadable" and "share a position" in entry.reason


# ---------------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------------


def test_oblique_anisotropic_series_geometry_round_trip(tmp_path):
    direction = rotation(0.35, -0.2, 0.5)
    spacing_xyz, origin = (0.7, 0.9, 2.5), (-120.5, 33.25, 410.0)
    array = random_hu((6, 20, 24), 3)
    files = write_series(tmp_path / "dcm", array, spacing_xyz=spacing_xyz, origin=origin, direction=direction)

    vol = read_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(vol.array, array)
    assert vol.spacing_zyx_mm == pytest.approx(spacing_xyz[::-1], abs=1e-6)
    assert vol.origin_lps_mm == pytest.approx(origin, abs=1e-6)
    np.testing.assert_allclose(vol.direction_matrix, direction, atol=1e-6)
    assert vol.warnings == []
    assert vol.source_paths == tuple(str(p) for p in files)

    # SimpleITK's own series path (GDCM sorting) gives the same geometry
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path / "dcm"))
    ref = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "dcm"), ids[0]))
    assert vol.spacing_zyx_mm == pytest.approx(ref.GetSpacing()[::-1], abs=1e-9)
    assert vol.origin_lps_mm == pytest.approx(ref.GetOrigin(), abs=1e-9)
    assert vol.direction_lps == pytest.approx(ref.GetDirection(), abs=1e-9)

    # index -> LPS mm equals SimpleITK's TransformContinuousIndexToPhysicalPoint, and inverts
    idx_zyx = np.array([[0, 0, 0], [5, 19, 23], [2.5, 7.25, 11.0], [3, 10.4, 0.6]])
    expected = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(map(float, i[::-1]))) for i in idx_zyx])
    np.testing.assert_allclose(index_to_lps_mm(vol, idx_zyx), expected, atol=1e-9)
    np.testing.assert_allclose(index_to_lps_mm(vol, idx_zyx[2]), expected[2], atol=1e-9)
    np.testing.assert_allclose(lps_mm_to_index(vol, expected), idx_zyx, atol=1e-9)

    # labels written as NIfTI on that grid come back on the same grid
    labels = np.zeros(array.shape, dtype=np.int64)
    labels[1:4, 5:9, 3:7] = 1
    labels[4, 10:15, 15:20] = 300
    out = write_labels_nifti(labels, vol, tmp_path / "labels.nii.gz")
    assert out == tmp_path / "labels.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcm", "labels.nii.gz"]  # no temp file left
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels)
    assert back.array.dtype == np.uint16
    # NIfTI stores the affine in float32
    assert back.spacing_zyx_mm == pytest.approx(vol.spacing_zyx_mm, abs=1e-5)
    assert back.origin_lps_mm == pytest.approx(vol.origin_lps_mm, abs=1e-4)
    np.testing.assert_allclose(back.direction_matrix, vol.direction_matrix, atol=1e-5)
    # ...and an independent reader sees the same physical position for a labelled voxel
    nii = sitk.ReadImage(str(out))
    np.testing.assert_allclose(nii.TransformIndexToPhysicalPoint((16, 11, 4)), index_to_lps_mm(vol, [4, 11, 16]),
                               atol=1e-3)


def test_to_sitk_from_sitk_is_exact():
    image = sitk.GetImageFromArray(random_hu((3, 5, 7)))
    image.SetSpacing((0.3, 0.45, 1.7))
    image.SetOrigin((1.1, -2.2, 3.3))
    image.SetDirection(tuple(rotation(0.1, 0.2, 0.3).ravel()))
    vol = from_sitk(image, modality="MR")
    assert vol.spacing_zyx_mm == (1.7, 0.45, 0.3)
    back = to_sitk(vol)
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".nii"])
def test_write_volume_round_trip(tmp_path, ext):
    vol = Volume(array=np.random.default_rng(0).normal(size=(4, 6, 5)).astype(np.float32),
                 spacing_zyx_mm=(3.0, 0.8, 0.6), origin_lps_mm=(5.0, -7.0, 9.5),
                 direction_lps=tuple(rotation(0.2, 0.0, -0.4).ravel()))
    path = write_volume(vol, tmp_path / f"v{ext}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    tol = 1e-5 if ext == ".nii" else 1e-12
    assert back.spacing_zyx_mm == pytest.approx(vol.spacing_zyx_mm, abs=tol)
    assert back.origin_lps_mm == pytest.approx(vol.origin_lps_mm, abs=tol * 10)
    np.testing.assert_allclose(back.direction_matrix, vol.direction_matrix, atol=tol)
    assert os.listdir(tmp_path) == [f"v{ext}"]


def test_writers_refuse_bad_input(tmp_path):
    vol = Volume(array=np.zeros((2, 3, 4), np.int16), spacing_zyx_mm=(1, 1, 1), origin_lps_mm=(0, 0, 0),
                 direction_lps=tuple(np.eye(3).ravel()))
    with pytest.raises(SmallsegError, match="labels have shape"):
        write_labels_nifti(np.zeros((2, 3, 5), np.uint8), vol, tmp_path / "l.nii.gz")
    with pytest.raises(SmallsegError, match="not integer"):
        write_labels_nifti(np.zeros((2, 3, 4), np.float32), vol, tmp_path / "l.nii.gz")
    with pytest.raises(SmallsegError, match=r"\.mhd"):
        write_volume(vol, tmp_path / "v.mhd")
    with pytest.raises(SmallsegError, match="does not exist"):
        write_volume(vol, tmp_path / "nope" / "v.mha")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# series checks
# ---------------------------------------------------------------------------------------------------------------


def test_missing_slice_warns_and_continues(tmp_path):
    array = random_hu((8, 10, 10))
    write_series(tmp_path, array, skip=(4,), spacing_xyz=(1.0, 1.0, 2.0))
    vol = read_volume(tmp_path)
    assert vol.array.shape == (7, 10, 10)
    np.testing.assert_array_equal(vol.array, np.delete(array, 4, axis=0))
    assert len(vol.warnings) == 1
    assert "1 missing slice" in vol.warnings[0] and "4 mm gap" in vol.warnings[0]


def test_uneven_spacing_warns(tmp_path):
    write_series(tmp_path, random_hu((5, 10, 10)), z_offsets=[0.0, 2.0, 4.0, 6.6, 8.6])
    vol = read_volume(tmp_path)
    assert any("spacing varies from 2 to 2.6 mm" in w for w in vol.warnings), vol.warnings


def test_gantry_tilt_warns(tmp_path):
    write_series(tmp_path, random_hu((4, 10, 10)), spacing_xyz=(1.0, 1.0, 2.0), shift_per_slice=(0.0, 0.5, 0.0))
    vol = read_volume(tmp_path)
    assert any("gantry tilt" in w for w in vol.warnings), vol.warnings


def test_size_check_states_gb_before_reading(tmp_path):
    write_series(tmp_path, random_hu((3, 64, 64)))
    msg = read_volume_error(tmp_path, max_gb=1e-5)
    # 3 * 64 * 64 int16 voxels = 24,576 bytes = 0.0 GB; the message gives GB, voxel count and the way out
    assert "GB in memory (12,288 voxels" in msg and "max_gb=None" in msg
    assert read_volume(tmp_path, max_gb=None).array.shape == (3, 64, 64)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_truncated_volume_file_is_a_clear_error(tmp_path, ext):
    # ITK's NIfTI reader alone would zero-fill the missing half without complaint.
    vol = Volume(array=random_hu((4, 30, 30)), spacing_zyx_mm=(1, 1, 1), origin_lps_mm=(0, 0, 0),
                 direction_lps=tuple(np.eye(3).ravel()))
    good = write_volume(vol, tmp_path / f"v{ext}")
    np.testing.assert_array_equal(read_volume(good).array, vol.array)
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    msg = read_volume_error(bad)
    assert f"cut{ext}" in msg
    if ext.startswith(".nii"):
        assert f"describes {4 * 30 * 30 * 2 + 352:,} bytes" in msg  # 352-byte header + int16 voxels


# ---------------------------------------------------------------------------------------------------------------
# 2-D microscopy formats
# ---------------------------------------------------------------------------------------------------------------


def test_2d_png_and_tiff_8_and_16_bit(tmp_path):
    from PIL import Image
    import tifffile

    rng = np.random.default_rng(4)
    gray16 = rng.integers(0, 65535, size=(37, 53), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    gray8 = rng.integers(0, 255, size=(21, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g8.tif", gray8)
    tifffile.imwrite(tmp_path / "g16.tiff", gray16)
    rgb = rng.integers(0, 255, size=(15, 19, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")

    for name, expected in [("g16.png", gray16), ("g8.tif", gray8), ("g16.tiff", gray16), ("rgb.png", rgb)]:
        vol = read_volume(tmp_path / name)
        assert vol.ndim_spatial == 2, name
        assert vol.array.dtype == expected.dtype, name
        np.testing.assert_array_equal(vol.array, expected, err_msg=name)
    # 2-D volumes go through the same writer and index helpers
    vol = read_volume(tmp_path / "rgb.png")
    back = read_volume(write_volume(vol, tmp_path / "rgb.nrrd"))
    np.testing.assert_array_equal(back.array, rgb)
    assert index_to_lps_mm(vol, [3, 4]) == pytest.approx(vol.origin_lps_mm + np.array([4, 3]) *
                                                         np.array(vol.spacing_zyx_mm[::-1]))
    # a labels image on a 2-D grid
    lab = write_labels_nifti(np.eye(15, 19, dtype=np.int32) * 7, vol, tmp_path / "lab.nii")
    np.testing.assert_array_equal(read_volume(lab).array, np.eye(15, 19) * 7)


# ---------------------------------------------------------------------------------------------------------------
# intensity presets
# ---------------------------------------------------------------------------------------------------------------


def test_window_maps_range_to_unit_interval_with_clipping():
    preset = IntensityPreset.window(-1000, 400)
    hu = np.array([-3000, -1000, -300, 400, 1500], dtype=np.int16)
    out = preset.apply(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_named_ct_windows_follow_width_level():
    assert (PRESETS["lung"].low, PRESETS["lung"].high) == (-1350.0, 150.0)  # W1500 / L-600
    assert (get_preset("soft_tissue").low, get_preset("soft_tissue").high) == (-160.0, 240.0)  # W400 / L40
    assert (PRESETS["mediastinum"].low, PRESETS["mediastinum"].high) == (-125.0, 225.0)  # W350 / L50
    assert (PRESETS["bone"].low, PRESETS["bone"].high) == (-500.0, 1300.0)  # W1800 / L400
    with pytest.raises(SmallsegError, match="lung"):
        get_preset("lungs")


def test_percentile_on_a_known_array():
    values = np.arange(1001, dtype=np.float64)  # the q-th percentile (linear) of 0..1000 is exactly 10 q
    preset = IntensityPreset.percentile(1.0, 99.5)
    win = preset.resolve(values.reshape(7, 11, 13))  # 1001 = 7 * 11 * 13: shape does not matter
    assert (win.low, win.high) == pytest.approx((10.0, 995.0))
    out = preset.apply(values)
    np.testing.assert_allclose(out[[0, 10, 502, 995, 1000]], [0, 0, (502 - 10) / 985, 1, 1], atol=1e-6)
    # tiles normalised with the resolved window match normalising the whole image at once
    image = np.random.default_rng(1).gamma(2.0, 300.0, size=(64, 64)).astype(np.uint16)
    whole = preset.apply(image)
    fixed = preset.resolve(image)
    np.testing.assert_array_equal(fixed.apply(image[:32, 16:48]), whole[:32, 16:48])
    assert np.all(preset.apply(np.full((4, 4), 7.0)) == 0.0)


def test_presets_round_trip_through_json_and_validate():
    for preset in [*PRESETS.values(), IntensityPreset.window(-50.5, 300.25)]:
        restored = IntensityPreset.from_dict(json.loads(json.dumps(preset.to_dict())))
        assert restored == preset
    with pytest.raises(SmallsegError, match="low"):
        IntensityPreset.window(10, 10)
    with pytest.raises(SmallsegError, match="p_low"):
        IntensityPreset.percentile(50, 20)
    with pytest.raises(SmallsegError, match="unknown field"):
        IntensityPreset.from_dict({"kind": "window", "low": 0, "high": 1, "gamma": 2})
    with pytest.raises(SmallsegError, match="unknown kind"):
        IntensityPreset.from_dict({"kind": "zscore"})


def test_read_volume_is_public_api():
    import smallseg

    assert smallseg.read_volume is read_volume
    assert "read_volume" in smallseg.__all__



def test_label_volume_readers_refuse_a_missing_truncated_or_foreign_file_in_one_line(tmp_path):
    """io/medical.read_image_file, the one reader behind training label volumes and 3-D scoring."""
    from smallseg.data.labels import ClassMapping
    from smallseg.data.labels.volume import read_label_volume
    from smallseg.io.medical import read_image_file
    from smallseg.metrics.evaluation_volume import evaluate_volumes

    labels = np.zeros((4, 16, 16), np.uint16)
    labels[1:3, 4:9, 4:9] = 1
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path))
    assert sitk.GetArrayFromImage(read_image_file(path, "label volume")).tolist() == labels.tolist()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(path.read_bytes()[:-40])
    foreign = tmp_path / "notes.nii"
    foreign.write_text("not an image", encoding="utf-8")
    for bad, message in ((tmp_path / "missing.nii.gz", "no such label volume file"), (truncated, "truncated"),
                         (foreign, "cannot read the label volume")):
        with pytest.raises(SmallsegError, match=message) as err:
            read_label_volume(path, bad, classes=ClassMapping(["nodule"]))
        assert "\n" not in str(err.value) and str(err.value).startswith(str(bad))
    with pytest.raises(SmallsegError, match="no such ground-truth label volume file"):
        evaluate_volumes(tmp_path / "missing.nii.gz", path)
