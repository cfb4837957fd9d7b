"""The reliability probe of issue #11: bad inputs, faults and attacks against the real command line.

Every case runs ``python -m smallseg ...`` in a subprocess, in a folder of its own under ``--work``, and
checks four things:

- **one line**: no traceback anywhere; every stderr line is one of smallseg's own prefixed messages
  (``smallseg COMMAND: error|warning|note: ...``), and a refused command prints exactly one error line;
- **exit code**: 0 all done, 1 some inputs failed, 2 bad usage or nothing processed;
- **nothing lost**: outputs written before the case are byte-identical after it (when the case refuses);
- **nothing stale**: no leftover temporary file (``io.atomic.is_partial_name``) and no finished-looking output
  (``run.json``, ``done.json``, ``best.safetensors``) where the case failed before finishing.

Run (about 10 minutes on 2 shared cores)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_reliability.py --work runs/probe

It prints a markdown table (case | command | expected | got | pass), also written to ``WORK/table.md``, and
exits 1 if any row fails. ``--only SUBSTRING`` runs the cases whose id contains it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # medical_helpers.write_series: the tests' DICOM series writer

from smallseg.io.atomic import is_partial_name  # noqa: E402
from train_helpers import tiny_train_config as _tests_tiny_config  # noqa: E402

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(ROOT)}
FINISHED_MARKERS = ("run.json", "done.json", "best.safetensors")


# ------------------------------------------------------------------------------------------------ running


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float
    argv: list[str]


# How a case's command runs: "fork" (default) forks this process, whose imports are already done, and runs
# smallseg.cli.main(argv) in the child with its own working folder, stdout/stderr files, rlimits and pid (a real
# process: it can be killed with -9, hold locks, fill a disk); an uncaught exception prints its traceback and exits
# 1 as the interpreter would. "spawn" runs a fresh `python -m smallseg ...` per command (about 10 s of imports
# each on this machine instead of none).
MODE = {"how": "fork"}


def _child(argv: list[str], cwd: Path, out_path: Path, err_path: Path, limit_fsize: int | None,
           hook: str | None) -> None:
    """In a forked child: run the CLI and _exit with its status (never returns)."""
    code = 1
    try:
        os.chdir(cwd)
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        namespace: dict = {}
        if hook:
            exec(textwrap.dedent(hook), namespace)
        from smallseg.cli import main

        try:
            code = int(main(argv, on_row_done=namespace.get("on_row_done")) or 0)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


@dataclass
class Started:
    pid: int
    out_path: Path
    err_path: Path
    argv: list[str]
    t0: float
    popen: subprocess.Popen | None = None

    def wait(self, timeout: float = 300) -> Ran:
        deadline = time.monotonic() + timeout
        status = None
        while status is None:
            if self.popen is not None:
                try:
                    code = self.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait()
                    code = -999
                status = code
                break
            pid, raw = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                status = -999
            else:
                time.sleep(0.02)
        err = self.err_path.read_text(errors="replace")
        if status == -999:
            err += "\n[timed out]"
        return Ran(status, self.out_path.read_text(errors="replace"), err, time.perf_counter() - self.t0, self.argv)

    def output_so_far(self) -> str:
        return self.out_path.read_text(errors="replace")


_COUNTER = [0]


def start(argv: list, cwd: Path, *, limit_fsize: int | None = None, hook: str | None = None) -> Started:
    """Start ``smallseg ARGV`` in a child process (see MODE); ``hook``: Python source that may define
    ``on_row_done(path, n)``, passed to ``smallseg.cli.main``."""
    argv = [str(a) for a in argv]
    _COUNTER[0] += 1
    logs = cwd / f".probe-{_COUNTER[0]}"
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    out_path.write_text("")
    err_path.write_text("")
    t0 = time.perf_counter()
    if MODE["how"] == "fork":
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(argv, cwd, out_path, err_path, limit_fsize, hook)
        return Started(pid, out_path, err_path, argv, t0)
    if hook is None:
        cmd = [PY, "-m", "smallseg", *argv]
    else:
        cmd = [PY, "-c", textwrap.dedent(hook) + "\nimport sys\nfrom smallseg.cli import main\n"
               "sys.exit(main(sys.argv[1:], on_row_done=globals().get('on_row_done')))\n", *argv]

    def limits():
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    with open(out_path, "w") as out, open(err_path, "w") as err:
        popen = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=err, preexec_fn=limits)
    return Started(popen.pid, out_path, err_path, argv, t0, popen)


def smallseg(argv: list, cwd: Path, *, timeout: float = 300, limit_fsize: int | None = None,
             hook: str | None = None) -> Ran:
    """Run ``smallseg ARGV`` in a child process in ``cwd`` and wait for it."""
    return start(argv, cwd, limit_fsize=limit_fsize, hook=hook).wait(timeout)


def hold_lock(lock_file: Path, cwd: Path) -> Started:
    """A child process holding ``OutputLock(lock_file)`` (as a running smallseg does) until killed; returns
    once it holds it."""
    hook = f"""
        import sys, time
        from smallseg.io.atomic import OutputLock
        lock = OutputLock({str(lock_file)!r}).acquire()
        print("locked", flush=True)
        time.sleep(300)
    """
    started = start(["--version"], cwd, hook=hook)  # the hook runs first and never returns
    deadline = time.monotonic() + 60
    while "locked" not in started.output_so_far() and time.monotonic() < deadline:
        time.sleep(0.02)
    return started


def stop(started: Started) -> None:
    try:
        os.kill(started.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    started.wait(10)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative names), locks and temporary names left out."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def partials(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if is_partial_name(p.name)] if folder.exists() else []


# ------------------------------------------------------------------------------------------------ checking


@dataclass
class Row:
    case: str
    command: str
    expected: str
    got: str = ""
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        """A problem found after :func:`check` (which sets ``ok`` from its own findings): the row fails."""
        self.problems.append(problem)
        self.ok = False


def check(row: Row, ran: Ran, *, code: int | tuple[int, ...], refused: bool | None = None, says: tuple[str, ...] = (),
          never_says: tuple[str, ...] = (), lost: tuple[dict, dict] | None = None, no_finished: Path | None = None,
          no_partials: Path | None = None, no_payload: Path | None = None) -> Row:
    """Fill in ``row`` from one run: exit code, one-line messages, required / forbidden text, nothing lost/stale,
    and (``no_payload``: the marker file an attack's payload would create) nothing run."""
    codes = (code,) if isinstance(code, int) else code
    text = ran.out + ran.err
    problems = row.problems
    if "Traceback" in text:
        problems.append("traceback")
    lines = [ln for ln in ran.err.splitlines() if ln.strip()]
    stray = [ln for ln in lines if not ln.startswith("smallseg") and not ln.startswith("  ")]
    if stray:
        problems.append(f"stray stderr: {stray[0][:80]!r}")
    errors = [ln for ln in lines if ": error:" in ln]
    if refused is None:
        refused = codes == (2,)
    if refused and len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    if ran.code not in codes:
        problems.append(f"exit {ran.code}")
    for needle in says:
        if needle.lower() not in text.lower():
            problems.append(f"no {needle!r}")
    for needle in never_says:
        if needle.lower() in text.lower():
            problems.append(f"says {needle!r}")
    if lost is not None:
        before, after = lost
        changed = [k for k in before if after.get(k) != before[k]]
        if changed:
            problems.append(f"lost/changed {changed[0]}")
    if no_finished is not None:
        done = [str(p.relative_to(no_finished)) for name in FINISHED_MARKERS for p in no_finished.rglob(name)] \
            if no_finished.exists() else []
        if done:
            problems.append(f"finished-looking {done[0]}")
    if no_partials is not None and partials(no_partials):
        problems.append(f"partial left: {Path(partials(no_partials)[0]).name}")
    if no_payload is not None and no_payload.exists():
        problems.append("PAYLOAD RAN")
    message = errors[0] if errors else (lines[-1] if lines else (ran.out.strip().splitlines() or [""])[-1])
    row.got = f"exit {ran.code}: {message[:150]}"
    row.ok = not problems
    return row


def cmd_text(argv: list[str], base: Path) -> str:
    shown = " ".join(str(a).replace(str(base) + "/", "").replace(str(base), ".") for a in argv)
    return "`smallseg " + shown.replace("|", "\\|")[:110] + "`"


# ------------------------------------------------------------------------------------------------ fixtures


class Fixtures:
    """Inputs the cases share, made once under ``WORK/fixtures``."""

    def __init__(self, work: Path):
        self.dir = work / "fixtures"
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        self.scene = self.geotiff(d / "scene.tif", seed=1)
        self.scene2 = self.geotiff(d / "scene2.tif", seed=2)
        self.tall = self.geotiff(d / "tall.tif", seed=3, h=704, w=192)
        self.nan_band = self.geotiff(d / "nan.tif", seed=4, dtype="float32", nan=True)
        self.no_crs = self.geotiff(d / "nocrs.tif", seed=5, crs=None)
        self.local_cs = self.geotiff(d / "localcs.tif", seed=6, crs='LOCAL_CS["engineering site",UNIT["metre",1]]')
        self.one_band = self.geotiff(d / "gray.tif", seed=7, count=1)
        self.corrupt = ROOT / "tests/data/rasterio-cc0/corrupt.tif"
        self.all_nodata = ROOT / "tests/data/rasterio-cc0/all-nodata.tif"
        self.rgba16 = ROOT / "tests/data/rasterio-cc0/RGBA.uint16.tif"
        self.truncated = d / "truncated.tif"
        self.truncated.write_bytes(self.tall.read_bytes()[: self.tall.stat().st_size // 3])
        self.empty = d / "empty.tif"
        self.empty.write_bytes(b"")
        self.text_tif = d / "text.tif"
        self.text_tif.write_text("not a raster\n")
        self.png = d / "plain.png"
        from PIL import Image

        Image.fromarray(np.random.default_rng(8).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(self.png)
        self.no_rasters = d / "no_rasters"
        self.no_rasters.mkdir(exist_ok=True)
        (self.no_rasters / "readme.txt").write_text("nothing here\n")
        self.marker = d / "PWNED"
        self.evil_pickle = d / "evil.pt"
        self.evil_pickle.write_bytes(pickle.dumps(_Payload(self.marker), protocol=2))
        self.attacks = self.attack_checkpoints()
        self.ct_series = self.dicom(d / "dicom_ok", "1.2.826.0.1.3680043.2.1125.77.1")
        self.nifti4d = self.nifti_4d(d / "four_d.nii.gz")
        self.nifti2d = self.nifti_2d(d / "slice.nii.gz")

    @staticmethod
    def geotiff(path: Path, *, seed: int, h: int = 160, w: int = 160, count: int = 3, dtype: str = "uint8",
                crs: str | None = "EPSG:32633", nan: bool = False) -> Path:
        import rasterio
        from rasterio.transform import Affine

        rng = np.random.default_rng(seed)
        image = rng.integers(40, 200, (count, h, w)).astype(dtype)
        for k in range(12):  # a few bright blobs so the model has something to find
            y, x = rng.integers(8, h - 16), rng.integers(8, w - 16)
            image[:, y:y + 6, x:x + 9] = 250
        if nan:
            image = image.astype("float32") / 255
            image[:, : h // 4, :] = np.nan
        profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=dtype,
                       transform=Affine(0.3, 0, 389_000, 0, -0.3, 5_819_000))
        if crs is not None:
            profile["crs"] = crs
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(image)
        return path

    def attack_checkpoints(self) -> dict[str, Path]:
        """Edited copies of the shipped remote-sensing checkpoint, as an attacker would write them."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        shipped = ROOT / "smallseg/weights/remote-sensing.safetensors"
        with safe_open(str(shipped), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
        base = json.loads(metadata["smallseg_config"])

        def edited(name: str, edit: Callable[[dict], object]) -> Path:
            config = json.loads(json.dumps(base))
            result = edit(config)
            text = result if isinstance(result, str) else json.dumps(config)
            path = self.dir / f"{name}.safetensors"
            save_file(tensors, str(path), metadata={**metadata, "smallseg_config": text})
            return path

        def smp(c, **kw):
            c.update(decoder="smp", smp_arch="Unet", smp_kwargs={"encoder_name": "tu-resnet18", "encoder_depth": 3,
                                                                  "decoder_channels": [32, 16, 8], **kw})

        out = {
            "checkpoint_path": edited("checkpoint_path", lambda c: smp(c, checkpoint_path=str(self.evil_pickle))),
            "hf_hub": edited("hf_hub", lambda c: c.update(encoder_name="tu-hf-hub:org/repo")),
            "local_dir": edited("local_dir", lambda c: c.update(encoder_name="tu-local-dir:/etc")),
            "dunder": edited("dunder", lambda c: c.update(__class__="os.system")),
            "input_scale_text": edited("input_scale_text", lambda c: c.update(input_scale="abc")),
            "training_decode_typo": edited("decode_typo", lambda c: c["training"].update(decode={"fg_treshold": .3})),
            "training_not_dict": edited("training_list", lambda c: c.update(training=[1, 2, 3])),
            "huge_channels": edited("huge", lambda c: c.update(decoder_pyramid_channels=10**12)),
            "config_not_json": edited("not_json", lambda c: "{not json"),
            "formula_class": edited("formula", lambda c: c.update(class_names=["=HYPERLINK(\"x\")", "+cmd"])),
        }
        raw = shipped.read_bytes()
        out["truncated"] = self.dir / "truncated.safetensors"
        out["truncated"].write_bytes(raw[: len(raw) // 2])
        out["random_bytes"] = self.dir / "random.safetensors"
        out["random_bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
        return out

    @staticmethod
    def dicom(folder: Path, uid: str, *, slices: int = 6, seed: int = 0, modality: str = "CT") -> Path:
        from medical_helpers import random_hu, write_series

        folder.mkdir(parents=True, exist_ok=True)
        write_series(folder, random_hu((slices, 64, 64), seed=seed), uid, modality=modality)
        return folder

    @staticmethod
    def nifti_4d(path: Path) -> Path:
        import SimpleITK as sitk

        image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((4, 32, 32), np.int16)) for _ in range(3)])
        sitk.WriteImage(image, str(path))
        return path

    @staticmethod
    def nifti_2d(path: Path) -> Path:
        import SimpleITK as sitk

        labels = np.zeros((32, 32), np.uint16)
        labels[4:9, 4:9] = 1
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(path))
        return path


class _Payload:
    """Unpickling this creates the marker file: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def tiny_train_config(folder: Path, **sections) -> Path:
    """The tests' tiny config (tests/train_helpers.py), trained for 2 epochs of 2 steps: a run with a finished
    epoch to resume from and one more to redo."""
    return _tests_tiny_config(folder, **{"optim": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2,
                                                   "warmup_steps": 1}, **sections})


# ------------------------------------------------------------------------------------------------ cases

CASES: list[tuple[str, str, Callable]] = []


def case(case_id: str, expected: str):
    def register(fn):
        CASES.append((case_id, expected, fn))
        return fn
    return register


TP = "tile-and-predict"
TP_FAST = ["--quiet", "--device", "cpu"]


def _tp_refusal(case_id: str, expected: str, extra: list[str], says: tuple[str, ...] = (),
                never_says: tuple[str, ...] = ("--resume",), inputs: str = "scene"):
    @case(case_id, expected)
    def run(fx: Fixtures, d: Path, row: Row) -> Row:
        argv = [TP, getattr(fx, inputs), "--out", d / "out", *TP_FAST, *extra]
        row.command = cmd_text(argv, d)
        return check(row, smallseg(argv, d), code=2, says=says, never_says=never_says, no_finished=d / "out",
                     no_partials=d / "out")
    return run


def _again(case_id: str, expected: str, finished: Callable, flags: tuple[str, ...] = (), *, out: str = "out",
           keep: Callable[[dict], dict] | None = None, note: str = "", **expect):
    """A case on a finished run: ``finished(fx, d) -> (argv, snapshot)`` makes it, then the same command runs
    again with ``flags`` and is checked with ``expect`` (see :func:`check`). With ``keep`` (the files that must
    survive, from a snapshot), nothing kept may change; without it, no temporary file may be left in ``out``."""
    @case(case_id, expected)
    def run(fx: Fixtures, d: Path, row: Row) -> Row:
        argv, before = finished(fx, d)
        row.command = cmd_text([*argv, *flags], d) + note
        ran = smallseg([*argv, *flags], d)
        if keep is not None:
            return check(row, ran, lost=(keep(before), keep(snapshot(d / out))), **expect)
        return check(row, ran, no_partials=d / out, **expect)
    return run


def _all(files: dict) -> dict:
    return files


def _out_is_a_file(case_id: str, command: Callable[[Fixtures, Path], list]):
    """``--out`` names a file: refused in one line, without suggesting --resume."""
    @case(case_id, "2, one line")
    def run(fx: Fixtures, d: Path, row: Row) -> Row:
        (d / "out").write_text("x")
        argv = command(fx, d)
        row.command = cmd_text(argv, d)
        return check(row, smallseg(argv, d), code=2, never_says=("--resume",))
    return run


def _second_writer(case_id: str, folder: str, command: Callable[[Fixtures, Path, Path], list], note: str):
    """Another process holds the output folder's lock: refused in one line naming that process."""
    @case(case_id, "2: 'in use by process N'")
    def run(fx: Fixtures, d: Path, row: Row) -> Row:
        out = d / folder
        out.mkdir()
        holder = hold_lock(out / ".smallseg.lock", d)
        try:
            argv = command(fx, d, out)
            row.command = cmd_text(argv, d) + note
            return check(row, smallseg(argv, d), code=2, says=("in use by process",))
        finally:
            stop(holder)
    return run


# ---- tile-and-predict: inputs

@case("tp-good", "0, every output, run.json last")
def _(fx, d, row):
    argv = [TP, fx.scene, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    check(row, ran := smallseg(argv, d), code=0, refused=False, no_partials=d / "out")
    if not (d / "out/scene.run.json").exists():
        row.fail("no run.json")
    return row


for _id, _input, _says in (
        ("tp-corrupt-geotiff", "corrupt", ()), ("tp-truncated-geotiff", "truncated", ()),
        ("tp-empty-file", "empty", ()), ("tp-text-named-tif", "text_tif", ()),
        ("tp-folder-without-rasters", "no_rasters", ())):
    _tp_refusal(_id, "2, one line naming the input", [], says=_says, inputs=_input)


@case("tp-missing-input", "2, one line")
def _(fx, d, row):
    argv = [TP, d / "nope.tif", "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("nope.tif",), no_finished=d / "out")


@case("tp-one-of-two-corrupt", "1, the good input's outputs complete")
def _(fx, d, row):
    argv = [TP, fx.corrupt, fx.scene, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=1, refused=False, says=("corrupt.tif",), no_partials=d / "out")
    if not (d / "out/scene.run.json").exists():
        row.fail("good input not finished")
    return row


for _id, _input, _says in (("tp-png", "png", ()), ("tp-one-band", "one_band", ()),
                           ("tp-rgba-uint16", "rgba16", ()), ("tp-all-nodata", "all_nodata", ("nodata",))):
    def _make(_id=_id, _input=_input, _says=_says):
        @case(_id, "0, outputs, notes in one line each")
        def _(fx, d, row):
            argv = [TP, getattr(fx, _input), "--out", d / "out", *TP_FAST]
            row.command = cmd_text(argv, d)
            return check(row, smallseg(argv, d), code=0, refused=False, says=_says, no_partials=d / "out")
    _make()


@case("tp-nan-band", "0, a one-line warning; NaN pixels are nodata (valid_px)")
def _(fx, d, row):
    argv = [TP, fx.nan_band, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=0, refused=False, says=("are NaN in a band",), never_says=("invalid value",))
    run = json.loads((d / "out/nan.run.json").read_text()) if (d / "out/nan.run.json").exists() else {}
    counts = run.get("counts", {})
    if counts.get("valid_px") != counts.get("scene_px", 0) * 3 // 4:  # the top quarter of the scene is NaN
        row.fail(f"valid_px {counts.get('valid_px')} of {counts.get('scene_px')}: NaN counted as valid")
    return row


@case("tp-transform-without-crs", "0, a one-line warning/note about the missing CRS")
def _(fx, d, row):
    argv = [TP, fx.no_crs, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=0, refused=False, says=("crs",))


@case("tp-local-cs-then-next-input", "0 or 1: the LOCAL_CS scene does not stop the next input")
def _(fx, d, row):
    argv = [TP, fx.local_cs, fx.scene, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=(0, 1), refused=False, no_partials=d / "out")
    if not (d / "out/scene.run.json").exists():
        row.fail("later input never ran")
    return row


# ---- tile-and-predict: options

for _id, _extra, _says in (
        ("tp-tile-1e9", ["--tile", "1000000000"], ("--tile",)),
        ("tp-tile-0", ["--tile", "0"], ("--tile",)),
        ("tp-tile-negative", ["--tile", "-64"], ("--tile",)),
        ("tp-overlap-negative", ["--overlap", "-5"], ("--overlap",)),
        ("tp-overlap-over-tile", ["--tile", "64", "--overlap", "64"], ("--overlap",)),
        ("tp-batch-size-0", ["--batch-size", "0"], ("--batch-size",)),
        ("tp-min-score-2", ["--min-score", "2"], ("--min-score",)),
        ("tp-min-area-negative", ["--min-area", "-1"], ("--min-area",)),
        ("tp-bands-out-of-range", ["--bands", "9"], ("--bands",)),
        ("tp-bands-garbage", ["--bands", "abc"], ("--bands",)),
        ("tp-formats-unknown", ["--formats", "bogus"], ("--formats",)),
        ("tp-device-missing-cuda", ["--device", "cuda:7"], ("cuda",)),
        ("tp-device-garbage", ["--device", "banana"], ("--device",)),
        ("tp-percentiles-one-value", ["--percentiles", "1"], ("--percentiles",)),
        ("tp-percentiles-reversed", ["--percentiles", "99,1"], ("--percentiles",)),
        ("tp-nodata-garbage", ["--nodata", "abc"], ("--nodata",)),
        ("tp-decode-workers-0", ["--decode-workers", "0"], ("--decode-workers",)),
        ("tp-cluster-garbage", ["--cluster", "nowhere:://"], ("--cluster",)),
        ("tp-split-scene-garbage", ["--split-scene", "abc"], ("--split-scene",)),
        ("tp-unknown-flag", ["--tiles", "64"], ("--tiles",)),
):
    _tp_refusal(_id, f"2, one line naming {_says[0] if _says else 'the conflict'}", _extra, says=_says)


@case("tp-resume-and-overwrite", "0: resume where possible, else start over (documented)")
def _(fx, d, row):
    argv = [TP, fx.scene, "--out", d / "out", *TP_FAST, "--resume", "--overwrite"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=0, refused=False, no_partials=d / "out")


# ---- tile-and-predict: models

for _id, _attack, _says in (
        ("tp-model-missing", None, ("missing.safetensors",)),
        ("tp-model-pickle", "pickle", ("pickle",)),
        ("tp-model-checkpoint-path", "checkpoint_path", ("checkpoint_path",)),
        ("tp-model-hf-hub", "hf_hub", ("hf-hub",)),
        ("tp-model-local-dir", "local_dir", ("local-dir",)),
        ("tp-model-dunder-key", "dunder", ("__class__",)),
        ("tp-model-input-scale-text", "input_scale_text", ("input_scale",)),
        ("tp-model-training-decode-typo", "training_decode_typo", ("fg_treshold",)),
        ("tp-model-training-not-object", "training_not_dict", ("training",)),
        ("tp-model-huge-channels", "huge_channels", ("decoder_pyramid_channels",)),
        ("tp-model-config-not-json", "config_not_json", ("json",)),
        ("tp-model-truncated", "truncated", ()),
        ("tp-model-random-bytes", "random_bytes", ()),
):
    def _make(_id=_id, _attack=_attack, _says=_says):
        @case(_id, "2 in one line, nothing unpickled, no network, fast")
        def _(fx, d, row):
            model = d / "missing.safetensors" if _attack is None else fx.evil_pickle if _attack == "pickle" \
                else fx.attacks[_attack]
            argv = [TP, fx.scene, "--out", d / "out", "--model", model, *TP_FAST]
            row.command = cmd_text(argv, d)
            never = ("truncated",) if _attack == "pickle" else ()
            check(row, ran := smallseg(argv, d, timeout=60), code=2, says=_says, never_says=never,
                  no_finished=d / "out", no_payload=fx.marker)
            if ran.seconds > 30:
                row.fail(f"slow ({ran.seconds:.0f} s)")
            return row
    _make()


@case("tp-model-formula-class-names", "0, objects.csv cells cannot run as formulas")
def _(fx, d, row):
    argv = [TP, fx.scene, "--out", d / "out", "--model", fx.attacks["formula_class"], *TP_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=(0, 2), refused=False)
    csv_path = d / "out/scene.objects.csv"
    if csv_path.exists():
        cells = [c for line in csv_path.read_text().splitlines()[1:] for c in line.split(",")]
        if any(c.lstrip('"').startswith(("=", "+", "@")) for c in cells):
            row.fail("formula cell written raw")
    return row


# ---- tile-and-predict: output folder faults


@case("tp-read-only-out", "2, one line, no --resume hint")
def _(fx, d, row):
    out = d / "out"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    argv = [TP, fx.scene, "--out", out, *TP_FAST]
    row.command = cmd_text(argv, d)
    try:
        if os.geteuid() == 0:  # root writes anywhere: a read-only bind would be needed; use a file-as-folder
            out.chmod(0o755)
            shutil.rmtree(out)
            out.write_text("a file, not a folder\n")
        return check(row, smallseg(argv, d), code=2, never_says=("--resume",))
    finally:
        if out.is_dir():
            out.chmod(0o755)


_out_is_a_file("tp-out-is-a-file", lambda fx, d: [TP, fx.scene, "--out", d / "out", *TP_FAST])


@case("tp-full-disk", "2 in one line, nothing finished-looking; then --resume/--overwrite finishes")
def _(fx, d, row):
    argv = [TP, fx.tall, "--out", d / "out", *TP_FAST]
    row.command = cmd_text(argv, d) + " (RLIMIT_FSIZE 40 kB)"
    check(row, smallseg(argv, d, limit_fsize=40_000), code=2, no_finished=d / "out", no_partials=d / "out")
    again = smallseg([*argv, "--overwrite"], d)
    if again.code != 0 or not (d / "out/tall.run.json").exists():
        row.fail(f"rerun exit {again.code}")
    return row


def _finished(fx, d: Path, *extra) -> tuple[list, dict]:
    argv = [TP, fx.scene, "--out", d / "out", *TP_FAST, *extra]
    first = smallseg(argv, d)
    assert first.code == 0, first.err
    return argv, snapshot(d / "out")


_again("tp-rerun-finished-without-flags", "2 (or 0 skipped), earlier outputs intact", _finished,
       note=" (twice)", keep=_all, code=(0, 2), refused=None)
_again("tp-resume-finished-same", "0, outputs unchanged", _finished, ("--resume",), keep=_all, code=0,
       refused=False)


@case("tp-resume-finished-other-settings", "not the stale result: refused (2) or redone")
def _(fx, d, row):
    argv, before = _finished(fx, d)
    argv2 = [*argv, "--resume", "--min-score", "0.9"]
    row.command = cmd_text(argv2, d)
    ran = smallseg(argv2, d)
    check(row, ran, code=(0, 2), refused=None)
    if ran.code == 0:
        run = json.loads((d / "out/scene.run.json").read_text())
        if "0.9" not in json.dumps(run):
            row.fail("stale run.json returned")
    elif snapshot(d / "out") != before:
        row.fail("refused but outputs changed")
    return row


@case("tp-resume-finished-input-changed", "not the stale result: refused (2) or redone")
def _(fx, d, row):
    shutil.copy(fx.scene, d / "scene.tif")
    argv = [TP, d / "scene.tif", "--out", d / "out", *TP_FAST]
    assert smallseg(argv, d).code == 0
    before = snapshot(d / "out")
    shutil.copy(fx.scene2, d / "scene.tif")
    row.command = cmd_text([*argv, "--resume"], d) + " (input replaced)"
    ran = smallseg([*argv, "--resume"], d)
    check(row, ran, code=(0, 2), refused=None)
    if ran.code == 0 and snapshot(d / "out") == before:
        row.fail("stale outputs kept")
    return row


_again("tp-overwrite-finished", "0, outputs replaced", _finished, ("--overwrite",), code=0, refused=False)


@case("tp-second-writer", "2: 'in use by process N'; the first run's outputs whole")
def _(fx, d, row):
    out = d / "out"
    go = d / "go"
    hook = f"""
        import os, time
        from pathlib import Path
        def on_row_done(path, n):
            if n == 1:
                print("paused", flush=True)
                deadline = time.monotonic() + 120
                while not Path({str(go)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
    """
    argv = [TP, fx.tall, "--out", out, *TP_FAST, "--tile", "128"]
    first = start(argv, d, hook=hook)
    deadline = time.monotonic() + 240
    while "paused" not in first.output_so_far() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        second_argv = [*argv, "--overwrite"]
        row.command = cmd_text(second_argv, d) + " (while another run writes)"
        ran = smallseg(second_argv, d)
        check(row, ran, code=2, says=("in use by process",))
    finally:
        go.write_text("")
        first_ran = first.wait(300)
    if "paused" not in first_ran.out or first_ran.code != 0:
        row.problems.append(f"first run exit {first_ran.code}")
    if not (out / "tall.run.json").exists():
        row.problems.append("first run not finished")
    else:
        doc = json.loads((out / "tall.geojson").read_text())
        rows = (out / "tall.objects.csv").read_text().splitlines()[1:]
        if len(doc["features"]) != len(rows):
            row.problems.append("GeoJSON and CSV disagree")
    row.ok = not row.problems
    return row


def _reference_bytes(fx, d: Path) -> dict[str, str]:
    ref = d / "reference"
    argv = [TP, fx.tall, "--out", ref, *TP_FAST, "--tile", "128"]
    assert smallseg(argv, d).code == 0
    return {k: v for k, v in snapshot(ref).items() if not k.endswith((".run.json", ".gpkg"))}


for _kill_at in (1, 3, 5):
    def _make(k=_kill_at):
        @case(f"tp-kill9-row{k}-resume", "kill -9 after row checkpoint; --resume gives byte-identical outputs")
        def _(fx, d, row):
            reference = _reference_bytes(fx, d)
            argv = [TP, fx.tall, "--out", d / "out", *TP_FAST, "--tile", "128"]
            hook = f"import os, signal\ndef on_row_done(path, n):\n    if n == {k}: os.kill(os.getpid(), signal.SIGKILL)\n"
            killed = smallseg(argv, d, hook=hook)
            row.command = cmd_text([*argv, "--resume"], d) + f" (after kill -9 at row {k})"
            if killed.code != -signal.SIGKILL:
                row.problems.append(f"kill did not happen (exit {killed.code})")
            if (d / "out/tall.run.json").exists():
                row.problems.append("killed run looks finished")
            refused = smallseg(argv, d)  # without --resume: refused, suggests it, work folder kept
            if refused.code != 2 or "--resume" not in refused.err:
                row.problems.append(f"plain rerun exit {refused.code}")
            check(row, smallseg([*argv, "--resume"], d), code=0, refused=False, no_partials=d / "out")
            got = {k2: v for k2, v in snapshot(d / "out").items() if k2 in reference}
            if got != reference:
                row.problems.append("resumed bytes differ")
            row.ok = not row.problems
            return row
    _make()


@case("tp-kill9-resume-other-settings", "2: the interrupted run used other settings")
def _(fx, d, row):
    argv = [TP, fx.tall, "--out", d / "out", *TP_FAST, "--tile", "128"]
    smallseg(argv, d, hook="import os, signal\ndef on_row_done(p, n):\n    if n == 2: os.kill(os.getpid(), 9)\n")
    before = snapshot(d / "out")
    argv2 = [*argv, "--resume", "--min-score", "0.7"]
    row.command = cmd_text(argv2, d)
    return check(row, smallseg(argv2, d), code=2, says=("other settings",), lost=(before, snapshot(d / "out")))


def _interrupted(fx, d: Path) -> tuple[list, Path]:
    argv = [TP, fx.tall, "--out", d / "out", *TP_FAST, "--tile", "128"]
    smallseg(argv, d, hook="import os, signal\ndef on_row_done(p, n):\n    if n == 3: os.kill(os.getpid(), 9)\n")
    return argv, d / "out" / ".tall.resume"


for _id, _what in (("tp-tampered-progress-json", "progress"), ("tp-tampered-band-npz-pickle", "band"),
                   ("tp-tampered-stitch-state", "stitch"), ("tp-tampered-params-json", "params")):
    def _make(_id=_id, _what=_what):
        @case(_id, "2 in one line naming the file and the fix (--overwrite), nothing unpickled")
        def _(fx, d, row):
            argv, work = _interrupted(fx, d)
            if _what == "progress":
                (work / "progress.json").write_text('{"next_tile_row": "three"')
            elif _what == "params":
                (work / "params.json").write_text("[1, 2")
            elif _what == "band":
                band = sorted(work.glob("band.*.npz"))[-1]
                np.savez(band, outline_x=np.array([_Payload(fx.marker)], dtype=object))
            else:
                stitch = sorted(work.glob("stitch.*.npz"))[-1]
                stitch.write_bytes(b"PK\x03\x04 not a zip")
            row.command = cmd_text([*argv, "--resume"], d) + f" ({_what} tampered)"
            check(row, smallseg([*argv, "--resume"], d), code=2, says=("--overwrite",), no_finished=d / "out",
                  no_payload=fx.marker)
            return row
    _make()


# ---- dicom-batch

DB = "dicom-batch"
DB_FAST = ["--quiet", "--device", "cpu", "--model", "medical"]


@case("db-good", "0, one row per stack, done.json")
def _(fx, d, row):
    argv = [DB, fx.ct_series, "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=0, refused=False, no_partials=d / "out")
    if not list((d / "out").rglob("done.json")):
        row.fail("no done.json")
    return row


def _db_refusal(case_id: str, extra: list, says: tuple[str, ...], root: str | None = None, code=2):
    @case(case_id, f"{code}, one line" + (f" naming {says[0]}" if says else ""))
    def _(fx, d, row):
        argv = [DB, fx.ct_series if root is None else (d / root), "--out", d / "out", *DB_FAST, *extra]
        if root == "empty":
            (d / "empty").mkdir()
        row.command = cmd_text(argv, d)
        return check(row, smallseg(argv, d), code=code, says=says, no_finished=d / "out", no_partials=d / "out")


for _id, _extra, _says in (
        ("db-batch-size-0", ["--batch-size", "0"], ("--batch-size",)),
        ("db-tile-8", ["--tile", "8"], ("--tile",)),
        ("db-min-score-5", ["--min-score", "5"], ("--min-score",)),
        ("db-min-slices-0", ["--min-slices", "0"], ("--min-slices",)),
        ("db-link-overlap-2", ["--link-overlap", "2"], ("--link-overlap",)),
        ("db-max-gb-negative", ["--max-gb", "-1"], ("--max-gb",)),
        ("db-preset-unknown", ["--preset", "bogus"], ("--preset",)),
        ("db-percentiles-garbage", ["--percentiles", "a,b"], ("--percentiles",)),
        ("db-series-uid-unknown", ["--series-uid", "9.9.9"], ("--series-uid",)),
        ("db-modalities-none-match", ["--modalities", "PT"], ("no image stack",)),
        ("db-device-garbage", ["--device", "banana"], ("--device",)),
):
    _db_refusal(_id, _extra, _says)

_db_refusal("db-empty-root", [], ("no files found",), root="empty")
_db_refusal("db-missing-root", [], ("nowhere",), root="nowhere")


@case("db-resume-and-overwrite", "0: keep what is complete, redo the rest (documented)")
def _(fx, d, row):
    argv = [DB, fx.ct_series, "--out", d / "out", *DB_FAST, "--resume", "--overwrite"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=0, refused=False, no_partials=d / "out")


@case("db-model-pickle", "2, one line, nothing unpickled")
def _(fx, d, row):
    argv = [DB, fx.ct_series, "--out", d / "out", "--quiet", "--device", "cpu", "--model", fx.evil_pickle]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=2, says=("pickle",), never_says=("truncated",), no_finished=d / "out",
          no_payload=fx.marker)
    return row


@case("db-truncated-only", "2: nothing processed, the file named")
def _(fx, d, row):
    (d / "in").mkdir()
    shutil.copy(ROOT / "tests/data/pydicom/MR_truncated.dcm", d / "in")
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, refused=False, no_partials=d / "out")


@case("db-not-dicom-files", "2: nothing processed")
def _(fx, d, row):
    (d / "in").mkdir()
    (d / "in/a.dcm").write_text("hello")
    (d / "in/b.txt").write_text("hello")
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, refused=False, no_partials=d / "out")


@case("db-good-and-truncated", "1: the good stack done, the bad file reported")
def _(fx, d, row):
    shutil.copytree(fx.ct_series, d / "in/ct")
    (d / "in/bad").mkdir(parents=True)
    shutil.copy(ROOT / "tests/data/pydicom/MR_truncated.dcm", d / "in/bad")
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=1, refused=False, no_partials=d / "out")
    if not list((d / "out").rglob("done.json")):
        row.fail("good stack not done")
    return row


@case("db-uid-path-traversal", "0, outputs stay inside --out")
def _(fx, d, row):
    fx.dicom(d / "in", "../../../../escaped", seed=1)
    argv = [DB, d / "in", "--out", d / "sub/out", *DB_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=(0, 1), refused=False)
    outside = [p for p in d.rglob("*") if "escaped" in p.name and "sub/out" not in str(p)]
    if outside:
        row.fail(f"wrote outside: {outside[0]}")
    return row


@case("db-uid-collisions", "0, three stacks, three folders, three ok rows")
def _(fx, d, row):
    for i, uid in enumerate(("1.2.3/4", "1.2.3_4", ".1.2.3_4")):
        fx.dicom(d / f"in/s{i}", uid, seed=10 + i, slices=4)
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=0, refused=False)
    done = list((d / "out").rglob("done.json"))
    if len(done) != 3:
        row.fail(f"{len(done)} stacks done")
    return row


@case("db-uid-summary-csv-and-formula", "0, no traceback, summary.csv cells safe")
def _(fx, d, row):
    fx.dicom(d / "in/a", "summary.csv", seed=20, slices=4)
    fx.dicom(d / "in/b", "=1+2", seed=21, slices=4)
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=(0, 1), refused=False)
    summary = (d / "out/summary.csv").read_text() if (d / "out/summary.csv").exists() else ""
    if not summary or any(c.startswith("=") for line in summary.splitlines() for c in line.split(",")):
        row.fail("summary missing or formula cell")
    return row


def _db_finished(fx, d: Path) -> tuple[list, dict]:
    argv = [DB, fx.ct_series, "--out", d / "out", *DB_FAST]
    assert smallseg(argv, d).code == 0
    return argv, snapshot(d / "out")


def _but_summary(files: dict) -> dict:
    return {k: v for k, v in files.items() if k != "summary.csv"}  # rewritten by every run


_again("db-rerun-without-flags", "2 (refused) or 0 skipped; earlier outputs intact", _db_finished, note=" (twice)",
       keep=_all, code=(0, 2), refused=None)
_again("db-resume", "0, finished stacks kept", _db_finished, ("--resume",), keep=_but_summary, code=0,
       refused=False)
_again("db-overwrite", "0, redone", _db_finished, ("--overwrite",), code=0, refused=False)


@case("db-full-disk", "one error line, no finished-looking stack")
def _(fx, d, row):
    argv = [DB, fx.ct_series, "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d) + " (RLIMIT_FSIZE 600 B)"
    check(row, smallseg(argv, d, limit_fsize=600), code=(1, 2), refused=True, no_partials=d / "out")
    for done in (d / "out").rglob("done.json"):
        row.fail(f"finished-looking {done.parent.name}")
    return row


_out_is_a_file("db-out-is-a-file", lambda fx, d: [DB, fx.ct_series, "--out", d / "out", *DB_FAST])
_second_writer("db-second-writer", "out", lambda fx, d, out: [DB, fx.ct_series, "--out", out, *DB_FAST],
               " (while another batch holds --out)")


@case("db-dicomdirtests", "0 or 1: every stack processed or skipped with its own reason")
def _(fx, d, row):
    argv = [DB, ROOT / "tests/data/dicomdirtests", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d, timeout=600), code=(0, 1), refused=False, no_partials=d / "out")


@case("db-no-meta-and-liver", "0 or 1, one row each, no traceback")
def _(fx, d, row):
    (d / "in").mkdir()
    for name in ("no_meta.dcm", "liver_1frame.dcm", "CT_small.dcm", "MR_small.dcm"):
        shutil.copy(ROOT / "tests/data/pydicom" / name, d / "in")
    argv = [DB, d / "in", "--out", d / "out", *DB_FAST]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=(0, 1), refused=False, no_partials=d / "out")


# ---- train


def _train(fx, d: Path, *, epochs_done: bool = True) -> tuple[list, dict]:
    config = tiny_train_config(d)
    argv = ["train", config, "--out", d / "run", "--quiet"]
    ran = smallseg(argv, d)
    assert ran.code == 0, ran.err
    return argv, snapshot(d / "run")


@case("train-good", "0, best/last/state/history")
def _(fx, d, row):
    argv = ["train", tiny_train_config(d), "--out", d / "run", "--quiet"]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=0, refused=False, no_partials=d / "run")
    if not (d / "run/best.safetensors").exists():
        row.fail("no best.safetensors")
    return row


def _weights_state_history(files: dict) -> dict:
    return {k: v for k, v in files.items() if k.endswith((".safetensors", "state.pt", "history.jsonl"))}


_again("train-existing-run-folder", "2: suggests --resume / --overwrite; the run intact", _train, out="run",
       note=" (twice)", keep=_all, code=2, says=("--resume", "--overwrite"))
_again("train-overwrite", "0, a fresh run", _train, ("--overwrite",), out="run", code=0, refused=False)
_again("train-resume-finished", "0, nothing redone", _train, ("--resume",), out="run", keep=_weights_state_history,
       code=0, refused=False)


@case("train-kill9-resume", "kill -9 mid-run; --resume gives the unbroken run's weights")
def _(fx, d, row):
    from safetensors.torch import load_file

    config = tiny_train_config(d, optim={"epochs": 3, "steps_per_epoch": 2, "batch_size": 2, "warmup_steps": 1})
    ref = smallseg(["train", config, "--out", d / "ref", "--quiet"], d)
    argv = ["train", config, "--out", d / "run", "--quiet"]
    # SIGKILL as soon as the first epoch's state.pt is in place (a real kill of a real training process)
    p = start(argv, d)
    deadline = time.monotonic() + 240
    while not (d / "run/state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if p.wait(60).code != -signal.SIGKILL:
        row.problems.append("training ended before the kill")
    row.command = cmd_text([*argv, "--resume"], d) + " (after kill -9)"
    check(row, smallseg([*argv, "--resume"], d), code=0, refused=False, no_partials=d / "run")
    a, b = load_file(str(d / "ref/last.safetensors")), load_file(str(d / "run/last.safetensors"))
    if ref.code != 0 or a.keys() != b.keys() or any(not (a[k] == b[k]).all() for k in a):
        row.fail("weights differ from the unbroken run")
    return row


_second_writer("train-second-writer", "run",
               lambda fx, d, run: ["train", tiny_train_config(d), "--out", run, "--quiet"],
               " (while another training holds it)")


for _id, _sections, _says in (
        ("train-loss-typo", {"loss": {"semantic_wieght": 2}}, ("semantic_weight",)),
        ("train-loss-not-number", {"loss": {"centroid_weight": "high"}}, ("loss.centroid_weight",)),
        ("train-decode-typo", {"decode": {"fg_treshold": 0.3}}, ("fg_threshold",)),
        ("train-optim-typo", {"optim": {"epocs": 1}}, ("epochs",)),
        ("train-augment-typo", {"augment": {"crop_sise": 32}}, ("crop_sise",)),
        ("train-data-source-typo", {"data": {"train": [{"synthetic": "nuclei", "cont": 2}]}}, ("count",)),
        ("train-synthetic-option-typo", {"data": {"train": [{"synthetic": "nuclei", "options": {"mean_diamter_px": 9}}]}},
         ("mean_diameter_px",)),
        ("train-geotiff-key-typo", {"data": {"train": [{"geotiff": {"image": "a.tif", "instance": "b.tif"}}]}},
         ("instances",)),
        ("train-data-typo", {"data": {"trian": []}}, ("train",)),
        ("train-section-typo", {"optimm": {}}, ("optimm",)),
        ("train-model-typo", {"model": {"encoder_nme": "resnet18"}}, ("encoder_nme",)),
        ("train-class-weights-count", {"loss": {"class_weights": [1, 2, 3, 4]}}, ("class_weights",)),
        ("train-init-pickle", {"init": "evil.pt"}, ("evil.pt",)),
        ("train-nifti-4d", {"data": {"train": [{"nifti": {"image": "four_d.nii.gz", "labels": "four_d.nii.gz"}}]}},
         ("four_d.nii.gz",)),
):
    def _make(_id=_id, _sections=_sections, _says=_says):
        @case(_id, f"2, one line naming {_says[0]}")
        def _(fx, d, row):
            shutil.copy(fx.evil_pickle, d / "evil.pt")
            shutil.copy(fx.nifti4d, d / "four_d.nii.gz")
            argv = ["train", tiny_train_config(d, **_sections), "--out", d / "run", "--quiet"]
            row.command = cmd_text(argv, d)
            check(row, smallseg(argv, d), code=2, says=_says, no_finished=d / "run", no_payload=fx.marker)
            return row
    _make()


@case("train-state-pt-pickle", "2: state.pt refused as data, nothing unpickled, the fix named")
def _(fx, d, row):
    argv, _ = _train(fx, d)
    (d / "run/state.pt").write_bytes(pickle.dumps({"epoch": 0, "x": _Payload(fx.marker)}))
    config = tiny_train_config(d, optim={"epochs": 3, "steps_per_epoch": 2, "batch_size": 2, "warmup_steps": 1})
    argv = ["train", config, "--out", d / "run", "--quiet", "--resume"]
    row.command = cmd_text(argv, d) + " (state.pt replaced by a pickle)"
    check(row, smallseg(argv, d), code=2, says=("state.pt", "--overwrite"), no_payload=fx.marker)
    return row


@case("train-yaml-python-tag", "2: the tag refused, nothing run")
def _(fx, d, row):
    path = d / "tag.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {fx.marker}']\ndata: {{}}\n")
    argv = ["train", path, "--out", d / "run", "--quiet"]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=2, says=("yaml",), no_payload=fx.marker)
    return row


@case("train-yaml-not-mapping", "2, one line")
def _(fx, d, row):
    (d / "list.yaml").write_text("- 1\n- 2\n")
    argv = ["train", d / "list.yaml", "--out", d / "run", "--quiet"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("mapping",))


@case("train-base-loop", "2: names the loop")
def _(fx, d, row):
    (d / "a.yaml").write_text("base: b.yaml\n")
    (d / "b.yaml").write_text("base: a.yaml\nmodel: {}\ndata: {}\n")
    argv = ["train", d / "a.yaml", "--out", d / "run", "--quiet"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("leads back",))


@case("train-epochs-0", "2, one line")
def _(fx, d, row):
    argv = ["train", tiny_train_config(d), "--out", d / "run", "--quiet", "--epochs", "0"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("--epochs",))


@case("train-coco-unknown-category", "2: names the undeclared category ids and counts")
def _(fx, d, row):
    _coco_files(d)
    config = tiny_train_config(d, model={"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8,
                                         "classes": 1, "decoder_pyramid_channels": 32,
                                         "decoder_segmentation_channels": 32},
                               data={"train": [{"coco": {"annotations": "gt.json", "images": "."}}]})
    argv = ["train", config, "--out", d / "run", "--quiet"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("not declared", "7 (2 annotations)"), no_finished=d / "run")


def _coco_files(d: Path) -> None:
    from PIL import Image
    from pycocotools import mask as mask_utils

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "im.png")
    anns = []
    for i, cat in enumerate((1, 7, 7)):
        m = np.zeros((32, 32), np.uint8, order="F")
        m[1 + 8 * i:6 + 8 * i, 1 + 8 * i:6 + 8 * i] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": i + 1, "image_id": 1, "category_id": cat, "segmentation": rle, "area": 25,
                     "bbox": [1 + 8 * i, 1 + 8 * i, 5, 5], "iscrowd": 0})
    (d / "gt.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "im.png", "height": 32, "width": 32}],
                                           "annotations": anns, "categories": [{"id": 1, "name": "car"}]}))
    (d / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "segmentation": anns[0]["segmentation"],
                                              "score": 0.9}]))


# ---- evaluate, tune-decode, synth, demo


@case("eval-coco-unknown-category", "0 with a counted warning naming the ids")
def _(fx, d, row):
    _coco_files(d)
    argv = ["evaluate", d / "gt.json", d / "pred.json"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=0, refused=False, says=("not declared", "7 (2 annotations)"))


@case("eval-nifti-4d", "2, one line: a 4-D image is not a label raster")
def _(fx, d, row):
    argv = ["evaluate", fx.nifti4d, fx.nifti4d]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("4-D",))


@case("eval-missing-gt", "2, one line")
def _(fx, d, row):
    argv = ["evaluate", d / "nope.tif", fx.scene]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("nope.tif",))


@case("eval-corrupt-raster", "2, one line")
def _(fx, d, row):
    argv = ["evaluate", fx.corrupt, fx.corrupt]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


@case("eval-grids-differ", "2, one line")
def _(fx, d, row):
    argv = ["evaluate", fx.nifti2d, fx.one_band]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


@case("eval-malformed-json", "2, one line")
def _(fx, d, row):
    _coco_files(d)
    (d / "bad.json").write_text("[{")
    argv = ["evaluate", d / "gt.json", d / "bad.json"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


@case("eval-coco-vs-raster", "2, one line")
def _(fx, d, row):
    _coco_files(d)
    argv = ["evaluate", d / "gt.json", fx.one_band]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


@case("tune-decode-pickle-model", "2, one line, nothing unpickled")
def _(fx, d, row):
    argv = ["tune-decode", fx.evil_pickle, tiny_train_config(d), "--out", d / "tuned.safetensors"]
    row.command = cmd_text(argv, d)
    check(row, smallseg(argv, d), code=2, says=("pickle",), no_payload=fx.marker)
    return row


@case("synth-count-0", "2, one line")
def _(fx, d, row):
    argv = ["synth", "ct", "--out", d / "ct", "--count", "0"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2, says=("--count",))


@case("synth-negative-size", "2, one line")
def _(fx, d, row):
    argv = ["synth", "nuclei", "--out", d / "nu", "--size", "-5", "-5"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


@case("demo-rerun-without-overwrite", "2 or 0 skipped; the earlier demo intact")
def _(fx, d, row):
    argv = ["demo", "--out", d / "demo", "--size", "128", "--quiet", "--device", "cpu"]
    first = smallseg(argv, d)
    before = snapshot(d / "demo")
    row.command = cmd_text(argv, d) + " (twice)"
    check(row, smallseg(argv, d), code=(0, 2), refused=None, lost=(before, snapshot(d / "demo")))
    if first.code != 0:
        row.fail(f"first demo exit {first.code}")
    return row


@case("no-subcommand-garbage", "2, one line")
def _(fx, d, row):
    argv = ["frobnicate"]
    row.command = cmd_text(argv, d)
    return check(row, smallseg(argv, d), code=2)


# ------------------------------------------------------------------------------------------------ main


def _fixtures(work: Path) -> Fixtures:
    """Fixtures made in a child process (SimpleITK and torch start thread pools that a later fork would inherit
    broken); this process only reads back their paths."""
    state = work / "fixtures.pickle"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            state.write_bytes(pickle.dumps(Fixtures(work).__dict__))
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, raw = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(raw) != 0:
        raise SystemExit("probe: making the fixtures failed (see above)")
    fx = Fixtures.__new__(Fixtures)
    fx.__dict__.update(pickle.loads(state.read_bytes()))  # written by our own child just now
    return fx


def _preload() -> None:
    """Import what the commands import, once, before any fork (imports start no threads)."""
    import segmentation_models_pytorch  # noqa: F401
    import SimpleITK  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    import smallseg.cli  # noqa: F401
    import smallseg.metrics.evaluation  # noqa: F401
    import smallseg.models.registry  # noqa: F401
    import smallseg.pipeline.dicom_batch  # noqa: F401
    import smallseg.pipeline.geotiff  # noqa: F401
    import smallseg.train.loop  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/probe", help="scratch folder (emptied first)")
    parser.add_argument("--only", default=None, help="run the cases whose id contains this")
    parser.add_argument("--mode", choices=("fork", "spawn"), default="fork",
                        help="fork: each command in a child of this preloaded process (default); spawn: a fresh "
                             "`python -m smallseg` per command")
    parser.add_argument("--keep", action="store_true", help="keep the work folder's fixtures (faster reruns)")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    if work.exists() and not args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    MODE["how"] = args.mode
    fx = _fixtures(work)
    if args.mode == "fork":
        _preload()
    rows: list[Row] = []
    selected = [c for c in CASES if args.only is None or args.only in c[0]]
    for case_id, expected, fn in selected:
        d = work / "cases" / case_id
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        row = Row(case=case_id, command="", expected=expected)
        try:
            row = fn(fx, d, row)
        except Exception as exc:  # a probe bug or an unexpected state: a failing row, never a crash
            row.fail(f"probe: {type(exc).__name__}: {str(exc)[:120]}")
        status = "pass" if row.ok else "FAIL: " + "; ".join(row.problems)
        print(f"{case_id}: {status}", file=sys.stderr, flush=True)
        rows.append(row)
        if fx.marker.exists():
            fx.marker.unlink()
    lines = ["| case | command | expected | got | pass |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        got = r.got.replace("|", "\\|").replace(str(work), "WORK").replace(str(ROOT) + "/", "")
        verdict = "pass" if r.ok else "**FAIL** " + "; ".join(r.problems).replace("|", "\\|")
        command = r.command.replace(str(work), "WORK").replace(str(ROOT) + "/", "")
        lines.append(f"| {r.case} | {command} | {r.expected} | {got} | {verdict} |")
    passed = sum(r.ok for r in rows)
    lines.append("")
    lines.append(f"{passed} of {len(rows)} cases pass ({time.perf_counter() - t0:.0f} s).")
    table = "\n".join(lines)
    (work / "table.md").write_text(table + "\n")
    print(table)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
