"""smallseg dicom-batch over a real tree: pydicom's files (CT, MR, truncated MR, SEG), a text file and series
written here with SimpleITK; a real (tiny, random-weight) SmallObjectNet saved as a checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.io.medical import find_series
from smallseg.models import load_checkpoint
from smallseg.models.tta import with_tta
from smallseg.pipeline.dicom_batch import BatchOptions, process_series, run_dicom_batch, series_folder_name

from conftest import PYDICOM_DATA as DATA  # tests/ is on sys.path under pytest
from medical_helpers import random_hu, rotation, save_tiny_ct_model, summary_rows, write_series

SYNTH_UID = "1.2.826.0.1.3680043.9.7.11"
MIXED_UIDS = ("1.2.826.0.1.3680043.9.7.12", "1.2.826.0.1.3680043.9.7.13")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    return save_tiny_ct_model(tiny_model, tmp_path_factory.mktemp("model"))


def write_synthetic_series(root: Path) -> None:
    """An oblique series and a folder mixing two series, one of them with a missing slice."""
    write_series(root / "synth", random_hu((4, 24, 32), 0), SYNTH_UID, direction=rotation(0.2, -0.1, 0.3))
    write_series(root / "mixed", random_hu((3, 24, 24), 1), MIXED_UIDS[0], prefix="b")
    write_series(root / "mixed", random_hu((4, 24, 24), 2), MIXED_UIDS[1], prefix="c", z_offsets=[0, 2.5, 7.5, 10])


@pytest.fixture()
def tree(tmp_path) -> Path:
    """CT_small (ok), MR_small + MR_truncated (one series with a broken file: failed), a SEG (skipped), a text
    file (skipped), an oblique synthetic series (ok) and a folder mixing two series, one with a missing slice."""
    root = tmp_path / "in"
    for sub, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm"), ("mr", "MR_truncated.dcm"),
                      ("seg", "liver_1frame.dcm")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, root / sub / name)
    (root / "notes.txt").write_text("not an image\n")
    write_synthetic_series(root)
    return root


def read_summary(out: Path) -> dict[str, dict[str, str]]:
    """summary.csv's rows by the base name of their path, its header checked."""
    rows = summary_rows(out)
    assert rows and list(rows[0]) == ["series_uid", "stack", "path", "status", "modality", "files", "objects",
                                      "seconds", "message", "folder"]
    return {os.path.basename(r["path"]): r for r in rows}


def test_batch_statuses_outputs_and_exit_code(tree, tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    rc = main(["dicom-batch", str(tree), "--out", str(out), "--model", str(checkpoint), "--quiet"])
    assert rc == 1  # the MR series has a truncated file: dropped, the good file beside it processed
    rows = read_summary(out)
    statuses = sorted((os.path.basename(r["path"]), r["status"]) for r in summary_rows(out))
    assert statuses == [("CT_small.dcm", "ok"), ("MR_small.dcm", "ok"), ("liver_1frame.dcm", "skipped"),
                        ("mixed", "ok"), ("mixed", "ok"), ("notes.txt", "skipped"), ("synth", "ok")]
    assert "MR_truncated.dcm" in rows["MR_small.dcm"]["message"] and "truncated" in rows["MR_small.dcm"]["message"]
    assert "Segmentation" in rows["liver_1frame.dcm"]["message"]
    assert "not DICOM" in rows["notes.txt"]["message"]
    mixed = [r for r in summary_rows(out) if r["series_uid"] in MIXED_UIDS]
    assert len(mixed) == 2
    gap = next(r for r in mixed if r["series_uid"] == MIXED_UIDS[1])
    assert "missing slice" in gap["message"]
    assert "\n" not in "".join(r["message"] for r in rows.values())
    # Every ok series: complete outputs whose object counts agree with each other and with the summary.
    for r in summary_rows(out):
        folder = out / r["series_uid"]
        if r["status"] != "ok":
            assert not (folder / "done.json").exists()
            continue
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
        objects = list(csv.DictReader((folder / "objects.csv").open()))
        ids = np.unique(labels)
        assert int(r["objects"]) == len(objects) == len(ids[ids > 0])
        assert [int(o["voxels"]) for o in objects] == list(np.bincount(labels.ravel())[1:])
        assert json.loads((folder / "done.json").read_text())["objects"] == len(objects)
    assert "0 failed, 1 unreadable file(s) dropped" in capsys.readouterr().out


def test_labels_keep_the_series_geometry(tree, tmp_path, checkpoint):
    series = next(s for s in find_series(tree / "synth"))
    result = process_series(series, str(checkpoint), BatchOptions(out_dir=str(tmp_path / "out")))
    assert result.status == "ok", result.message
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tree / "synth"), SYNTH_UID))
    source = reader.Execute()
    labels = sitk.ReadImage(str(tmp_path / "out" / SYNTH_UID / "labels.nii.gz"))
    assert labels.GetSize() == source.GetSize() == (32, 24, 4)
    # NIfTI stores the geometry as float32: agree to float32 precision.
    assert np.allclose(labels.GetSpacing(), source.GetSpacing(), atol=1e-5)
    assert np.allclose(labels.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), source.GetDirection(), atol=1e-5)
    assert not np.allclose(source.GetDirection(), np.eye(3).ravel())  # the case is really oblique
    # Object centroids in objects.csv are physical points of the labels' own voxels.
    array = sitk.GetArrayFromImage(labels)
    row = next(csv.DictReader((tmp_path / "out" / SYNTH_UID / "objects.csv").open()))
    mean_idx = np.argwhere(array == int(row["id"])).mean(axis=0)[::-1]
    expected = source.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in mean_idx))
    got = [float(row[f"centroid_lps_{a}_mm"]) for a in "xyz"]
    assert np.allclose(got, expected, atol=1e-3)


def test_resume_skips_complete_series_and_redoes_incomplete_or_changed_ones(tmp_path, checkpoint):
    tree = tmp_path / "in"
    write_synthetic_series(tree)
    (tree / "notes.txt").write_text("not an image\n")
    out = tmp_path / "out"
    first = run_dicom_batch(tree, out, checkpoint, progress=False)
    ok_uids = [r.series_uid for r in first.results if r.status == "ok"]
    assert len(ok_uids) == 3 and [r.status for r in first.results].count("skipped") == 1

    def inodes():  # outputs are replaced atomically, so a rewrite gives a new inode
        return {u: (out / u / "labels.nii.gz").stat().st_ino for u in ok_uids}

    before = inodes()
    second = run_dicom_batch(tree, out, checkpoint, progress=False, resume=True)
    assert inodes() == before
    assert [(r.series_uid, r.status, r.objects) for r in second.results] == \
        [(r.series_uid, r.status, r.objects) for r in first.results]
    assert all("earlier run" in r.message for r in second.results if r.status == "ok")
    # Incomplete series (no done.json: killed before the end) and a series whose input changed are redone.
    (out / SYNTH_UID / "done.json").unlink()
    os.utime(next((tree / "mixed").glob("b*.dcm")), ns=(1, 1))
    third = run_dicom_batch(tree, out, checkpoint, progress=False, resume=True)
    after = inodes()
    redone = {u for u in ok_uids if after[u] != before[u]}
    assert redone == {SYNTH_UID, MIXED_UIDS[0]}
    assert (out / SYNTH_UID / "done.json").exists()
    assert [r.objects for r in third.results] == [r.objects for r in first.results]  # deterministic
    # Other options: everything is redone.
    run_dicom_batch(tree, out, checkpoint, progress=False, resume=True, min_slices=2)
    assert all(inodes()[u] != after[u] for u in ok_uids)


def test_interrupted_batch_leaves_a_consistent_summary(tree, tmp_path, checkpoint):
    from smallseg.models import load_checkpoint

    model = load_checkpoint(checkpoint)
    calls = []

    def stop_on_second_series(module, args):
        calls.append(1)
        if len(calls) > 1:  # CT_small (first series, one slice) finishes; the next one is killed mid-way
            raise KeyboardInterrupt

    model.register_forward_pre_hook(stop_on_second_series)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_dicom_batch(tree, out, model, progress=False)
    rows = summary_rows(out)
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["path"].endswith("CT_small.dcm")
    assert len(list(out.glob("*/done.json"))) == 1
    assert not list(out.rglob(".*partial*"))


def test_dicom_seg_output_references_the_series(tree, tmp_path, checkpoint):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    out = tree / "results"  # inside the tree: its files must not come back as input
    result = run_dicom_batch(tree / "synth", out, checkpoint, progress=False, dicom_seg=True)
    assert [r.status for r in result.results] == ["ok"], result.results[0].message
    seg = pydicom.dcmread(out / SYNTH_UID / "seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "nodule"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SYNTH_UID
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / SYNTH_UID / "labels.nii.gz")))
    frames = int(seg.NumberOfFrames)
    assert frames == int((labels > 0).any(axis=(1, 2)).sum())  # empty frames omitted, one segment
    masks = seg.pixel_array.reshape(frames, *labels.shape[1:]).astype(bool)
    # Each frame names its source slice (SOP Instance UID "<series uid>.<k + 1>": medical_helpers.write_series).
    for mask, group in zip(masks, seg.PerFrameFunctionalGroupsSequence):
        sop = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = int(sop.rsplit(".", 1)[1]) - 1
        assert np.array_equal(mask, labels[z] > 0)
    again = run_dicom_batch(tree / "synth", out, checkpoint, progress=False, dicom_seg=True, resume=True)
    assert [r.series_uid for r in again.results] == [SYNTH_UID]  # the SEG in results/ is not an input


def test_dicom_seg_without_highdicom_is_one_clear_error(tmp_path, checkpoint, monkeypatch):
    write_series(tmp_path / "in", random_hu((2, 16, 16), 3), SYNTH_UID)
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    with pytest.raises(SmallsegError, match="dicom_seg=True needs the highdicom package"):
        run_dicom_batch(tmp_path / "in", tmp_path / "out", checkpoint, progress=False, dicom_seg=True)
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line(tmp_path, checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["dicom-batch", str(tmp_path / "empty"), "--out", str(tmp_path / "o1"), "--model",
                 str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no files found" in err and "\n" not in err
    write_series(tmp_path / "in", random_hu((3, 16, 16), 4), SYNTH_UID)
    assert main(["dicom-batch", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-model" in err and "\n" not in err
    with pytest.raises(SmallsegError, match="min_slices 0"):  # the library names fields; the CLI says flags
        run_dicom_batch(tmp_path / "in", tmp_path / "o3", checkpoint, min_slices=0, progress=False)
    # A series over the size limit fails with the size; the batch still writes its summary.
    result = run_dicom_batch(tmp_path / "in", tmp_path / "o4", checkpoint, progress=False, max_gb=1e-6)
    assert [r.status for r in result.results] == ["failed"]
    assert "over max_gb" in result.results[0].message
    assert read_summary(tmp_path / "o4")["in"]["status"] == "failed"


def test_options_object_and_keywords_give_the_same_batch(tmp_path, checkpoint):
    """run_dicom_batch(options=BatchOptions(...)) == the same fields as keywords: the same files, byte for byte,
    done.json included (its options record out_dir, which is the argument's in both); keywords go on top."""
    write_series(tmp_path / "in", random_hu((3, 20, 24), 6), SYNTH_UID)
    outs = {}
    for name, call in {"kw": dict(min_slices=2, preset="lung"),
                       "obj": dict(options=BatchOptions(out_dir="ignored", min_slices=2, preset="lung")),
                       "top": dict(options=BatchOptions(out_dir="x", min_slices=3, preset="lung"),
                                   min_slices=2)}.items():
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        result = run_dicom_batch(tmp_path / "in", out, checkpoint, progress=False, **call)
        assert [r.status for r in result.results] == ["ok"]
        outs[name] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                      if p.is_file() and p.name not in ("summary.csv", ".smallseg.lock")}
    done = next(k for k in outs["kw"] if k.endswith("done.json"))
    strip = lambda files: {k: (re.sub(rb'"seconds": [0-9.e-]+', b"", v) if k == done else v)  # noqa: E731
                           for k, v in files.items()}
    assert strip(outs["kw"]) == strip(outs["obj"]) == strip(outs["top"])
    assert b'"min_slices": 2' in outs["kw"][done]
    with pytest.raises(SmallsegError, match=r"^run_dicom_batch: unknown option\(s\) min_slice; options of"):
        run_dicom_batch(tmp_path / "in", tmp_path / "o5", checkpoint, progress=False, min_slice=2)


def test_process_series_is_a_pure_function_of_its_arguments(tmp_path, checkpoint):
    write_series(tmp_path / "in", random_hu((3, 20, 24), 5), SYNTH_UID)
    series = find_series(tmp_path / "in")[0]
    a = process_series(series, str(checkpoint), BatchOptions(out_dir=str(tmp_path / "a")))
    b = process_series(series, str(checkpoint), BatchOptions(out_dir=str(tmp_path / "b")))
    assert a.status == b.status == "ok" and a.objects == b.objects
    name = series_folder_name(series)
    assert (tmp_path / "a" / name / "objects.csv").read_text() == (tmp_path / "b" / name / "objects.csv").read_text()
    skipped = process_series(find_series(DATA)[-1], str(checkpoint), BatchOptions(out_dir=str(tmp_path / "c")))
    assert skipped.status in ("skipped", "failed") and skipped.message
    assert not (tmp_path / "c").exists()


def test_tta_reaches_every_slice_and_is_part_of_the_resume_key(tmp_path, checkpoint):
    write_series(tmp_path / "in", random_hu((3, 24, 32), 7), SYNTH_UID, direction=rotation(0.1, 0.2, -0.1))
    with_option = run_dicom_batch(tmp_path / "in", tmp_path / "opt", checkpoint, progress=False, tta="flips")
    # The same model wrapped by hand, the option off: the same bytes.
    wrapped = with_tta(load_checkpoint(checkpoint), "flips").eval()
    by_hand = run_dicom_batch(tmp_path / "in", tmp_path / "hand", wrapped, progress=False)
    plain = run_dicom_batch(tmp_path / "in", tmp_path / "plain", checkpoint, progress=False)
    assert [r.status for r in with_option.results] == [r.status for r in by_hand.results] == ["ok"]
    nii = [(tmp_path / d / SYNTH_UID / "labels.nii.gz") for d in ("opt", "hand", "plain")]
    probs = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in nii]
    np.testing.assert_array_equal(probs[0], probs[1])
    csv = [(tmp_path / d / SYNTH_UID / "objects.csv").read_text() for d in ("opt", "hand", "plain")]
    assert csv[0] == csv[1]
    assert csv[0] != csv[2] or not np.array_equal(probs[0], probs[2])  # TTA changed something
    # Off, the key is the one runs before the option recorded; on, it differs (resume redoes the stack).
    off = BatchOptions(out_dir="x")
    old_key = {k: v for k, v in dataclasses.asdict(off).items() if k not in ("out_dir", "device", "batch_size", "tta")}
    assert off.result_hash() == hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:16]
    assert BatchOptions(out_dir="x", tta="flips").result_hash() != off.result_hash()
    with pytest.raises(SmallsegError, match="tta rot: use None, True or one of"):
        BatchOptions(out_dir="x", tta="rot")


def test_auto_picks_the_shipped_model_for_the_stacks_modality(monkeypatch):
    from smallseg import shipped

    present = {name: Path(f"/x/{name}.safetensors") for name in ("medical", "microscopy", "ct")}
    monkeypatch.setattr(shipped, "builtin_models", lambda: present)
    assert shipped.model_for_modalities({"CT"})[0] == "ct"
    assert shipped.model_for_modalities({"sm", "GM"})[0] == "microscopy"
    name, why = shipped.model_for_modalities({"CT", "SM"})
    assert name == "medical" and "CT, SM" in why and "different models" in why
    assert shipped.model_for_modalities({"MR"})[0] == "medical"
    assert shipped.model_for_modalities(set()) == ("medical", "no image stacks")
    monkeypatch.setattr(shipped, "builtin_models", lambda: {"medical": present["medical"]})
    assert shipped.model_for_modalities({"CT"})[0] == "medical"  # no CT model shipped: the general one


def test_auto_model_of_a_ct_batch_is_said_and_used(tmp_path, capsys):
    from smallseg.models.registry import load_model, weights_fingerprint
    from smallseg.shipped import model_for_modalities

    write_series(tmp_path / "in", random_hu((3, 32, 32), 5), SYNTH_UID)
    expected, _ = model_for_modalities({"CT"})
    assert main(["dicom-batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert f"note: model auto: {expected} (image stacks of modality CT)" in capsys.readouterr().err
    done = json.loads(next((tmp_path / "out").glob("*/done.json")).read_text())
    assert done["model"] == weights_fingerprint(load_model(expected))
    # Only the stacks asked for decide: a batch restricted to MR (none here) has no image stack to choose for.
    result = run_dicom_batch(tmp_path / "in", tmp_path / "out2", modalities=["MR"], progress=False)
    assert result.notes[0] == "model auto: medical (no image stacks)"


def test_auto_help_names_only_shipped_models(monkeypatch):
    from smallseg import shipped

    monkeypatch.setattr(shipped, "builtin_models", lambda: {"medical": Path("m"), "microscopy": Path("u")})
    assert shipped.auto_model_help() == "microscopy for SM/GM, medical for other or mixed modalities"
