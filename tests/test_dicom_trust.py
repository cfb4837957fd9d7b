"""dicom-batch can be trusted with any output folder and any UID: injective folder names, one writer per OUT,
CSV cells that cannot run as formulas, a full disk stops the batch with a summary of what was done, exit codes
and flags as documented. Series written here with SimpleITK/GDCM; a real tiny SmallObjectNet as checkpoint."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import medical_helpers  # tests/ is on sys.path under pytest
from medical_helpers import random_hu, save_tiny_ct_model, summary_rows

from smallseg.cli import build_parser, main
from smallseg.cli.dicom_batch import as_flags as dicom_as_flags
from smallseg.errors import SmallsegError
from smallseg.io.atomic import OutputLock
from smallseg.io.dicom import SeriesInfo
from smallseg.pipeline.dicom_batch import SUMMARY_COLUMNS, run_dicom_batch, series_folder_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


def write_series(folder: Path, uid: str, shape=(3, 24, 24), seed=0, prefix="s", modality="CT") -> list[Path]:
    """An axial series of random HU, 0.8 mm pixels, slices 2.5 mm apart; its SOP Instance UIDs do not derive
    from ``uid`` (which may be anything, e.g. ``=1+2``)."""
    return medical_helpers.write_series(folder, random_hu(shape, seed), uid, study_uid="1.2.826.0.1.3680043.9.7.0",
                                        instance_uid_root=f"1.2.826.0.1.3680043.9.8.{seed}", modality=modality,
                                        spacing_xyz=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0), prefix=prefix)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    return save_tiny_ct_model(tiny_model, tmp_path_factory.mktemp("model"), class_names=["=HYPERLINK(\"http://x\")"])


# ---------------------------------------------------------------------------------------------------------------
# 5. folder names
# ---------------------------------------------------------------------------------------------------------------


def test_folder_names_are_injective_and_safe():
    uids = ["1.2.3/4", "1.2.3_4", ".1.2.3_4", "1.2.3.4", "summary.csv", "..", "1.2.3_4-", "nouid", "", "A", "a"]
    names = {}
    for uid in uids:
        for stack, n in ((1, 1), (1, 2), (2, 2)):
            info = SeriesInfo(kind="image", files=("/x/y/f.dcm",), series_uid=uid, stack=stack, n_stacks=n)
            names[(uid, stack, n > 1)] = series_folder_name(info)
    assert len(set(names.values())) == len(names)  # no two (UID, stack) share a folder
    for name in names.values():
        assert "/" not in name and name not in ("", ".", "..", "summary.csv") and not name.startswith(".")
    assert names[("1.2.3.4", 1, False)] == "1.2.3.4"  # a conforming UID is its own name
    assert names[("1.2.3.4", 2, True)] == "1.2.3.4_stack2"
    assert re.fullmatch(r"1\.2\.3_4-[0-9a-f]{12}", names[("1.2.3/4", 1, False)])


def test_colliding_uids_get_three_folders_and_a_uid_named_summary_csv_does_not_abort(tmp_path, checkpoint):
    uids = ["1.2.3/4", "1.2.3_4", ".1.2.3_4", "summary.csv"]
    for i, uid in enumerate(uids):
        write_series(tmp_path / "in" / f"s{i}", uid, seed=i)
    out = tmp_path / "out"
    result = run_dicom_batch(tmp_path / "in", out, checkpoint, progress=False)
    assert [r.status for r in result.results] == ["ok"] * 4 and result.exit_code == 0
    rows = summary_rows(out)
    assert sorted(r["series_uid"] for r in rows) == sorted(uids)
    folders = {r["series_uid"]: r["folder"] for r in rows}
    assert len(set(folders.values())) == 4
    for uid, folder in folders.items():  # every result kept: its own labels, objects and marker
        assert {"labels.nii.gz", "objects.csv", "done.json"} <= {p.name for p in (out / folder).iterdir()}
    assert (out / "summary.csv").is_file()


def test_a_second_batch_on_the_same_out_is_refused_naming_the_process(tmp_path, checkpoint, capsys):
    write_series(tmp_path / "in", "1.2.826.0.1.3680043.9.7.50")
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out / ".smallseg.lock"):  # another run holds OUT (flock: also across open files)
        assert main(["dicom-batch", str(tmp_path / "in"), "--out", str(out), "--model", str(checkpoint),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"in use by process {os.getpid()}" in err and "\n" not in err
    assert not (out / "summary.csv").exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. CSV formula injection
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["=1+2", "+1.2.3", "-1.2.3", "@SUM(1)"])
def test_formula_cells_are_defused_in_summary_and_objects(tmp_path, checkpoint, uid):
    write_series(tmp_path / "in", uid)
    out = tmp_path / "out"
    result = run_dicom_batch(tmp_path / "in", out, checkpoint, progress=False)
    assert result.results[0].status == "ok" and result.results[0].objects > 0
    (row,) = summary_rows(out)
    assert row["series_uid"] == "'" + uid  # a leading apostrophe: text, not a formula
    objects = (out / row["folder"] / "objects.csv").read_text()
    assert "\n=HYPERLINK" not in objects and ",=HYPERLINK" not in objects
    first = next(csv.DictReader(objects.splitlines()))
    assert first["class"] == "'=HYPERLINK(\"http://x\")"


# ---------------------------------------------------------------------------------------------------------------
# 7. a full disk
# ---------------------------------------------------------------------------------------------------------------


def test_a_full_disk_stops_the_batch_in_one_line_with_the_summary_written(tmp_path, checkpoint):
    write_series(tmp_path / "in" / "a_small", "1.2.826.0.1.3680043.9.7.61", shape=(2, 16, 16), seed=1)
    write_series(tmp_path / "in" / "b_big", "1.2.826.0.1.3680043.9.7.62", shape=(8, 128, 128), seed=2)
    write_series(tmp_path / "in" / "c_never", "1.2.826.0.1.3680043.9.7.63", shape=(2, 16, 16), seed=3)
    out = tmp_path / "out"
    # A real write limit for the child process: files may not grow past 12 KB (the big series' labels do);
    # SIGXFSZ ignored so that a write past it fails with EFBIG, as on a full disk.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))
        import torch
        torch.set_num_threads(1)
        from smallseg.cli import main
        sys.exit(main(["dicom-batch", {str(tmp_path / "in")!r}, "--out", {str(out)!r}, "--model",
                       {str(checkpoint)!r}, "--quiet"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "could not be written" in errors[0] and "1 entry not processed" in errors[0]
    rows = summary_rows(out)
    assert [(Path(r["path"]).name, r["status"]) for r in rows] == [("a_small", "ok"), ("b_big", "failed")]
    assert "incomplete" in rows[1]["message"] and "file size limit" in rows[1]["message"]
    big = out / rows[1]["folder"]
    assert not (big / "done.json").exists() and not (big / "labels.nii.gz").exists()
    assert not list(out.rglob(".*partial*"))  # nothing half-written left behind
    assert (out / rows[0]["folder"] / "done.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# 9, 13. options, messages and exit codes
# ---------------------------------------------------------------------------------------------------------------


def dicom_batch_flags() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["dicom-batch"]
    return {flag for action in sub._actions for flag in action.option_strings}


def test_every_flag_a_dicom_message_names_exists():
    """The library's messages name Python arguments; dicom-batch's translation (cli/dicom_batch.as_flags) turns
    them into flags, and every flag it can produce is one the subcommand has."""
    flags = dicom_batch_flags()
    assert {"--series-uid", "--overwrite", "--resume", "--modalities"} <= flags
    sources = ["smallseg/io/dicom.py", "smallseg/io/dicom_header.py", "smallseg/io/medical.py",
               "smallseg/pipeline/dicom_batch.py"]
    for src in sources:
        text = (REPO / src).read_text(encoding="utf-8")
        assert "as a list" not in text  # no advice the command line cannot follow
    named = set()
    for target in [*dicom_as_flags.fields.values(), *dicom_as_flags.phrases.values()]:
        named |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", target))
    assert {"--resume", "--overwrite", "--dicom-seg", "--series-uid", "--normalize"} <= named
    assert named <= flags, named - flags
    assert dicom_as_flags("x: pass resume=True or overwrite=True") == "x: pass --resume or --overwrite"


def test_exit_codes_resume_overwrite_and_series_uid(tmp_path, checkpoint, capsys):
    shutil_copy = (REPO / "tests" / "data" / "pydicom" / "liver_1frame.dcm")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no image here\n")
    if shutil_copy.exists():
        (tmp_path / "nothing" / "seg.dcm").write_bytes(shutil_copy.read_bytes())
    # Nothing processed: exit 2, one line saying so.
    assert main(["dicom-batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o0"), "--model",
                 str(checkpoint), "--quiet"]) == 2
    assert "no image stack was processed" in capsys.readouterr().err

    uids = ["1.2.826.0.1.3680043.9.7.71", "1.2.826.0.1.3680043.9.7.72"]
    write_series(tmp_path / "in" / "a", uids[0], seed=1)
    write_series(tmp_path / "in" / "b", uids[1], seed=2)
    out = tmp_path / "out"
    args = ["dicom-batch", str(tmp_path / "in"), "--out", str(out), "--model", str(checkpoint), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    labels = out / uids[0] / "labels.nii.gz"
    first = labels.stat().st_ino
    # A rerun without --resume / --overwrite is refused (it used to redo and overwrite silently).
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "earlier dicom-batch" in err and "--resume" in err and "--overwrite" in err and "\n" not in err
    assert labels.stat().st_ino == first
    assert main([*args, "--resume"]) == 0 and labels.stat().st_ino == first  # kept
    assert main([*args, "--overwrite"]) == 0 and labels.stat().st_ino != first  # redone
    # --series-uid: only that series.
    assert main([*args, "--overwrite", "--series-uid", uids[1]]) == 0
    assert [r["series_uid"] for r in summary_rows(out)] == [uids[1]]
    capsys.readouterr()
    assert main([*args, "--overwrite", "--series-uid", "9.9.9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smallseg dicom-batch: error: --series-uid 9.9.9: no series with that UID")
    assert uids[0] in err and "\n" not in err
    with pytest.raises(SmallsegError, match="modalities: empty"):
        run_dicom_batch(tmp_path / "in", tmp_path / "o5", checkpoint, progress=False, modalities=[" "])
    assert list(SUMMARY_COLUMNS) == list(summary_rows(out)[0])
