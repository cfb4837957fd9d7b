"""Every DICOM series handled the way a radiologist expects: series split into stacks (pydicom's real
dicomdirtests tree: localizers, a 3-plane scout, a radial MR, a lone slice 200 mm from its stack, radiographs,
50 pixel-less files, DICOMDIRs), honest geometry (assumed spacing said, SliceThickness for single slices, mm²
for projections), class names by modality, and one line for a 4-D NIfTI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from medical_helpers import summary_rows  # tests/ is on sys.path under pytest
import SimpleITK as sitk

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.io.dicom import find_series
from smallseg.io.medical import Volume, read_volume
from smallseg.models import save_checkpoint
from smallseg.pipeline.dicom_batch import run_dicom_batch
from smallseg.pipeline.classes import modality_classes, trained_modalities
from smallseg.pipeline.volume import predict_volume

from conftest import DATA_DIR, PYDICOM_DATA  # tests/ is on sys.path under pytest

DICOMDIRTESTS = DATA_DIR / "dicomdirtests"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    m = tiny_model("resnet18", semantic_bias=[-1.0, 1.0], classes=1, in_channels=1, max_distance_px=6,
                   tile_size_px=128, class_names=["lesion"])
    return save_checkpoint(m, tmp_path_factory.mktemp("model") / "tiny.safetensors")



def folder_of(path: str) -> str:
    return Path(path).relative_to(DICOMDIRTESTS).as_posix()


# ---------------------------------------------------------------------------------------------------------------
# dicomdirtests: one row per stack or non-image series, each with its own reason
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicomdir_batch(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("dd") / "out"
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err, std = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(std):
        rc = main(["dicom-batch", str(DICOMDIRTESTS), "--out", str(out), "--model", str(checkpoint)])
    return rc, out, summary_rows(out), err.getvalue()


def test_dicomdirtests_every_stack_processed_or_skipped_with_its_own_reason(dicomdir_batch):
    rc, out, rows, err = dicomdir_batch
    assert rc == 0  # everything an image was processed; nothing failed
    images = [r for r in rows if r["status"] == "ok"]
    assert len(images) == 25 and not [r for r in rows if r["status"] == "failed"]
    # One console line per row, with its file count.
    lines = [line for line in err.splitlines() if line.startswith(("ok: ", "skipped: ", "failed: "))]
    assert len(lines) == len(rows) and all(" file" in line for line in lines)
    # (series, stack) and output folders are unique.
    assert len({(r["series_uid"], r["stack"]) for r in images}) == 25
    assert len({r["folder"] for r in images}) == 25
    for r in images:
        assert (out / r["folder"] / "done.json").is_file()
    by_series: dict[str, list[dict]] = {}
    for r in images:
        by_series.setdefault(r["series_uid"], []).append(r)
    stacks = sorted(len(v) for v in by_series.values())
    # 3 CR, CT5N, 4 single MR; CT2 (lone slice + 3), CT2N (2 localizers), 2 x 3-plane MR, radial MR (7).
    assert stacks == [1] * 8 + [2, 2, 3, 3, 7]
    ct2 = sorted(by_series["1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"], key=lambda r: r["stack"])
    assert [(r["stack"], r["files"]) for r in ct2] == [("1/2", "1"), ("2/2", "3")]
    assert "missing slice" not in ct2[1]["message"]  # the lone slice 200 mm away is its own stack, no gap
    # Non-images: 8 DICOMDIRs without a UID of their own, the 50 pixel-less files of TINY_ALPHA as ONE row.
    skipped = [r for r in rows if r["status"] == "skipped"]
    dirs = [r for r in skipped if r["modality"] == "DICOMDIR"]
    assert len(dirs) == 8 and all(r["series_uid"] == "" for r in dirs)
    (tiny,) = [r for r in skipped if "TINY_ALPHA/PT000000" in r["path"]]
    assert tiny["files"] == "50" and tiny["message"].startswith("no pixel data")
    assert tiny["series_uid"] == "1.2.826.0.1.3680043.8.498.73052100648462801855733330064330327590"
    assert "corrupt" not in tiny["message"] and "cannot read" not in tiny["message"]
    assert len(skipped) == 8 + 1 + 3  # and LICENSE.pydicom, README.txt, TINY_ALPHA/README: not DICOM


def test_projections_are_2d_in_mm2_and_single_slices_use_slice_thickness(dicomdir_batch):
    _, out, rows, _ = dicomdir_batch
    by_path = {folder_of(r["path"]): r for r in rows if r["status"] == "ok"}
    cr = by_path["77654033/CR1/6154"]
    assert cr["modality"] == "CR" and "ImagerPixelSpacing" in cr["message"] and "areas in mm2" in cr["message"]
    header = (out / cr["folder"] / "objects.csv").read_text().splitlines()[0].split(",")
    assert "area_mm2" in header and "volume_mm3" not in header and header[-1] == "geometry_note"
    labels = sitk.ReadImage(str(out / cr["folder"] / "labels.nii.gz"))
    assert labels.GetDimension() == 2 and labels.GetSpacing() == pytest.approx((0.1, 0.1))
    # A CT localizer (Image Type LOCALIZER) is a 2-D image too; so is each image of the radial MR.
    for key in ("98892001/CT2N/6293", "98892003/MR700/4467"):
        assert "projection image" in by_path[key]["message"]
        assert sitk.ReadImage(str(out / by_path[key]["folder"] / "labels.nii.gz")).GetDimension() == 2
    # A lone axial slice: 3-D, its third axis the SliceThickness (1.25 mm), said in the row and objects.csv.
    lone = by_path["77654033/CT2/17106"]
    assert "SliceThickness 1.25 mm" in lone["message"]
    labels = sitk.ReadImage(str(out / lone["folder"] / "labels.nii.gz"))
    assert labels.GetSize()[2] == 1 and labels.GetSpacing()[2] == pytest.approx(1.25)
    header = (out / lone["folder"] / "objects.csv").read_text().splitlines()[0].split(",")
    assert "volume_mm3" in header and header[-1] == "geometry_note"
    # A plain multi-slice stack assumes nothing: the plain table.
    ct5 = by_path["98892001/CT5N"]
    assert "geometry_note" not in (out / ct5["folder"] / "objects.csv").read_text().splitlines()[0]


def test_missing_pixel_spacing_is_said_in_the_row_and_in_objects_csv(tmp_path, checkpoint):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.7.90.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "OT", "1.2.826.0.1.3680043.9.7.90", "1.2.826.0.1.3"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (32, 32)).astype("<u2").tobytes()
    (tmp_path / "in").mkdir()
    pydicom.dcmwrite(tmp_path / "in" / "nospacing.dcm", ds, enforce_file_format=True)
    out = tmp_path / "out"
    result = run_dicom_batch(tmp_path / "in", out, checkpoint, progress=False)
    (row,) = result.results
    assert row.status == "ok" and "pixel spacing missing: 1 mm assumed" in row.message
    lines = (out / Path(row.output_dir).name / "objects.csv").read_text().splitlines()
    assert lines[0].endswith(",geometry_note")
    assert len(lines) > 1 and all("pixel spacing missing: 1 mm assumed" in line for line in lines[1:])


# ---------------------------------------------------------------------------------------------------------------
# 8. truncated file beside a good one; stacks through read_volume
# ---------------------------------------------------------------------------------------------------------------


def test_truncated_copy_beside_its_series_is_dropped_and_the_good_file_read(tmp_path):
    for name in ("MR_small.dcm", "MR_truncated.dcm"):
        shutil.copy(PYDICOM_DATA / name, tmp_path / name)
    (entry,) = find_series(tmp_path)
    assert entry.is_image and entry.files == (str(tmp_path / "MR_small.dcm"),)
    assert "dropped 1 unreadable file" in entry.notes[0] and "MR_truncated.dcm" in entry.notes[0]
    vol = read_volume(entry)
    assert vol.array.shape == (1, 64, 64) and any("MR_truncated.dcm" in w for w in vol.warnings)


def test_a_folder_with_one_series_in_several_stacks_names_them(tmp_path):
    for sub in ("4950", "4981", "5011"):  # the 3-plane MR scout: one UID, three orientations
        shutil.copy(DICOMDIRTESTS / "98892003" / "MR2" / sub, tmp_path / sub)
    entries = find_series(tmp_path)
    assert [e.stack_label for e in entries] == ["1/3", "2/3", "3/3"]
    with pytest.raises(SmallsegError) as err:
        read_volume(tmp_path)
    msg = str(err.value)
    assert "holds 3 image stacks" in msg and "find_series" in msg and "\n" not in msg
    assert read_volume(entries[1]).array.shape == (1, 16, 16)


# ---------------------------------------------------------------------------------------------------------------
# 12. class names by modality
# ---------------------------------------------------------------------------------------------------------------


def test_ct_objects_of_the_medical_classes_are_nodules_and_untrained_modalities_get_a_note(tmp_path, tiny_model):
    # The shipped medical model's classes; the bias leans objects towards "nucleus" (class 1).
    model = tiny_model("resnet18", semantic_bias=[-1.0, 1.0, -1.0], classes=2, in_channels=1, max_distance_px=6,
                       tile_size_px=128, class_names=["nucleus", "nodule"])
    assert modality_classes(model.config, "CT") == [2] and modality_classes(model.config, "") == [1]
    assert modality_classes(model.config, "MR") is None and trained_modalities(model.config) == {"CT", "", "SM",
                                                                                                  "GM"}
    ct = read_volume(PYDICOM_DATA / "CT_small.dcm")
    found = predict_volume(ct, model)
    assert len(found.objects) and set(found.objects.class_names) == {"nodule"}
    assert set(found.objects.class_ids.tolist()) == {2} and any("relabelled nodule" in w for w in found.warnings)
    kept = predict_volume(ct, model, by_modality=False)
    assert "nucleus" in set(kept.objects.class_names)  # what the class head says without the modality rule
    np.testing.assert_array_equal(kept.labels > 0, found.labels > 0)  # same objects, only the class differs
    # dicom-batch: a note per untrained modality (MR), and --modalities skips the others with the reason.
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (tmp_path / "in").mkdir(exist_ok=True)
        shutil.copy(PYDICOM_DATA / name, tmp_path / "in" / name)
    batch = run_dicom_batch(tmp_path / "in", tmp_path / "out", model, progress=False)
    assert batch.notes == ["the model was not trained on MR images (trained on: CT, microscopy)"]
    mr = next(r for r in batch.results if r.modality == "MR")
    assert mr.status == "ok" and "not trained on MR" in mr.message
    only_ct = run_dicom_batch(tmp_path / "in", tmp_path / "out2", model, progress=False, modalities=["ct"])
    assert [(r.modality, r.status) for r in only_ct.results] == [("CT", "ok"), ("MR", "skipped")]
    assert "modality MR not among the modalities asked for (CT)" in only_ct.results[1].message
    assert next(csv.DictReader((tmp_path / "out" / batch.results[0].output_dir.rsplit("/", 1)[1]
                                / "objects.csv").open()))["class"] == "nodule"


# ---------------------------------------------------------------------------------------------------------------
# 4-D NIfTI
# ---------------------------------------------------------------------------------------------------------------


def test_a_4d_nifti_is_one_line(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16), isVector=False)  # t, z, y, x
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "fmri.nii.gz"))
    with pytest.raises(SmallsegError) as err:
        read_volume(tmp_path / "fmri.nii.gz")
    msg = str(err.value)
    assert "fmri.nii.gz: a 4-D image (6 x 5 x 4 x 3" in msg and "3-D files" in msg and "\n" not in msg
    with pytest.raises(ValueError):  # a Volume cannot hold one either
        Volume(array=np.zeros((3, 4, 5, 6, 7)), spacing_zyx_mm=(1, 1, 1), origin_lps_mm=(0, 0, 0),
               direction_lps=tuple(np.eye(3).ravel()))


def test_two_echoes_at_the_same_positions_are_two_stacks(tmp_path):
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    rng = np.random.default_rng(5)
    for echo in (1, 2):
        for k in range(3):
            image = sitk.GetImageFromArray(rng.integers(0, 900, (12, 12)).astype(np.int16))
            image.SetSpacing((1.0, 1.0))
            for key, value in {"0008|0060": "MR", "0020|000e": "1.2.826.0.1.3680043.9.7.95",
                               "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
                               "0008|0018": f"1.2.826.0.1.3680043.9.7.95.{echo}.{k}",
                               "0018|0086": str(echo), "0020|0013": str(3 * (echo - 1) + k + 1),
                               "0020|0032": f"0\\0\\{3.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
                image.SetMetaData(key, value)
            writer.SetFileName(str(tmp_path / f"e{echo}_{k}.dcm"))
            writer.Execute(image)
    entries = find_series(tmp_path)
    assert [(e.kind, e.stack_label, len(e.files)) for e in entries] == [("image", "1/2", 3), ("image", "2/2", 3)]
    assert {Path(f).name[:2] for f in entries[0].files} == {"e1"}  # one echo per stack
    assert read_volume(entries[1]).array.shape == (3, 12, 12)
