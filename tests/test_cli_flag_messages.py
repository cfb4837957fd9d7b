"""Library errors name Python arguments (``pixel_size_m``, ``size_buckets``), and the command line spells them
as its flags (``--pixel-size-m``, ``--size-buckets``): a library user is told what to pass in Python, a CLI user
what to type. The first test greps the library for flag spellings; the others go through the CLI, one per
translated message (one line, exit code 2, nothing written)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from smallseg.cli import main
from smallseg.data.microscopy import make_nuclei_image
from smallseg.data.remote_sensing import SceneSettings
from smallseg.errors import SmallsegError

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

# Flags the library may spell, and why.
ALLOWED = {
    # dask's own command-line flag (`dask scheduler --scheduler-file FILE`), named to say where the file comes from
    ("smallseg/cluster/client.py", "--scheduler-file"),
}


def _flags_in_library_strings() -> set[tuple[str, str]]:
    """(module, flag) for every ``--flag`` in a string of the library outside smallseg/cli/, docstrings aside
    (they may show the command line)."""
    found = set()
    for path in sorted((ROOT / "smallseg").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("smallseg/cli/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found.update((rel, flag) for flag in FLAG.findall(node.value))
    return found


def test_library_messages_name_python_arguments_not_flags():
    found = _flags_in_library_strings()
    assert ALLOWED <= found  # the scan sees the allowed flag (in an f-string): it reads what it should
    unexpected = sorted(found - ALLOWED)
    assert not unexpected, f"library strings that spell CLI flags (name the Python argument instead): {unexpected}"


@pytest.mark.parametrize("make, message", [
    (lambda: SceneSettings(8, 64, 0), "height x width 8x64: scenes must be at least 16x16 pixels"),
    (lambda: SceneSettings(64, 64, 0, pixel_size_m=5.0), "pixel_size_m 5.0: use 0.1 to 2 m"),
    (lambda: SceneSettings(64, 64, 0, crs="EPSG:4326"), "crs EPSG:4326: not a projected CRS"),
    (lambda: make_nuclei_image(64, 64, seed=0, mean_diameter_px=1.0), "mean_diameter_px 1.0: use 3 px"),
])
def test_the_library_names_its_arguments_and_checks_them_when_built(make, message):
    with pytest.raises(SmallsegError) as info:
        make()
    assert str(info.value).startswith(message)


def _one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("argv, start", [
    (["remote-sensing", "--size", "8", "64"], "--size 8x64: scenes must be at least 16x16 pixels"),
    (["remote-sensing", "--pixel-size-m", "5"], "--pixel-size-m 5.0: use 0.1 to 2 m"),
    (["remote-sensing", "--density", "9"], "--density 9.0: use 0 to 3"),
    (["remote-sensing", "--crs", "EPSG:4326"], "--crs EPSG:4326: not a projected CRS"),
    (["remote-sensing", "--crs", "nowhere"], "--crs nowhere: not a CRS rasterio knows"),
    (["remote-sensing", "--size", "64", "64", "--window-px", "20"], "--window-px 20: use a positive multiple of 16"),
    (["nuclei", "--size", "8", "8"], "--size 8x8: images must be at least 16x16 px"),
    (["nuclei", "--diameter-px", "1"], "--diameter-px 1.0: use 3 px up to half the image side"),
    (["ct", "--size", "16", "16", "4"], "--size 16x16x4: need at least 32x32 voxels per slice"),
    (["ct", "--spacing-mm", "0", "1", "1"], "--spacing-mm (0.0, 1.0, 1.0): spacings must be positive"),
    (["ct", "--diameter-range-mm", "9", "3"], "--diameter-range-mm (9.0, 3.0): need 0 < min <= max"),
])
def test_synth_says_the_flag(tmp_path, capsys, argv, start):
    out = tmp_path / "out"
    line = _one_error_line(capsys, ["synth", *argv, "--out", str(out)])
    assert line.startswith(f"smallseg synth: error: {start}"), line
    assert not any(out.rglob("*.*")) if out.exists() else True  # refused before any file is written


def test_synth_recipe_says_kind(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("nuclei:\n  splits:\n    train: {seed: 0, count: 1}\n", encoding="utf-8")
    line = _one_error_line(capsys, ["synth", "recipe", str(recipe), "--out", str(tmp_path / "o"), "--kind", "ct"])
    assert line.startswith("smallseg synth: error: --kind ct: not in"), line


@pytest.mark.parametrize("options, start", [
    (["--max-dets", "0"], "--max-dets 0: must be at least 1"),
    (["--pixel-size", "2px"], "--pixel-size 2px: give a physical length, e.g. 0.3m or 0.5mm"),
    (["--class-field", "kind"], "--class-field applies to vector ground truth (GPKG / GeoJSON / ...), not "),
    (["--size-buckets", "100,25px"], "--size-buckets 100,25px: need 0 < small maximum < medium maximum"),
    (["--size-buckets", "10px"], "--size-buckets 10px: expected SMALL_MAX,MEDIUM_MAX"),
    (["--size-buckets", "a,b"], "--size-buckets a,b: 'a' is not a number"),
    (["--boundary-width", "0px"], "--boundary-width 0px: must be positive"),
    (["--boundary-width", "wide"], "--boundary-width wide: expected a length like 2px"),
    (["--boundary", "reference", "--boundary-width", "2px"],
     "--boundary-width: the reference mode fixes d at 2% of the image diagonal; leave out --boundary-width or "
     "use --boundary fixed"),
])
def test_evaluate_says_the_flag(tmp_path, capsys, options, start):
    # The settings are checked before GT and PRED are opened, so the files need not exist.
    line = _one_error_line(capsys, ["evaluate", str(tmp_path / "gt.tif"), str(tmp_path / "pred.tif"), *options])
    assert line.startswith(f"smallseg evaluate: error: {start}"), line


def test_evaluate_says_the_flag_for_coco_inputs(tmp_path, capsys):
    line = _one_error_line(capsys, ["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "pred.json"),
                                    "--gt-classes", "c.tif"])
    assert line == "smallseg evaluate: error: --gt-classes: only for label rasters; COCO JSON carries categories " \
                   "and scores", line


@pytest.mark.parametrize("options, start", [
    (["--minutes", "0"], "--minutes 0.0: give a positive number"),
    (["--val-fraction", "0.9"], "--val-fraction 0.9: use 0.05 to 0.5"),
    (["--lr", "0"], "--lr 0.0: must be positive"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch 0: must be at least 1"),
])
def test_finetune_says_the_flag(tmp_path, capsys, options, start):
    # FinetuneOptions checks its fields when built, before any image or model is read: the files need not exist.
    argv = ["finetune", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "a.geojson"), *options]
    line = _one_error_line(capsys, [*argv, "--out", str(tmp_path / "m.safetensors")])
    assert line.startswith(f"smallseg finetune: error: {start}"), line
    line = _one_error_line(capsys, [*argv[:4], "--out", str(tmp_path / "m.pt")])
    assert line == f"smallseg finetune: error: --out {tmp_path / 'm.pt'}: the checkpoint must be a .safetensors file"


def test_finetune_options_name_their_fields():
    from smallseg.train.finetune import FinetuneOptions

    with pytest.raises(SmallsegError, match=r"^batch_size 0: must be at least 1$"):
        FinetuneOptions(images=("a.tif",), labels=("a.geojson",), out="m.safetensors", batch_size=0)
    with pytest.raises(SmallsegError, match=r"^patience 0: must be at least 1 \(or None: never stop early\)$"):
        FinetuneOptions(images=("a.tif",), labels=("a.geojson",), out="m.safetensors", patience=0)


def test_tile_and_predict_spells_the_input_statistics_warning_as_flags():
    from smallseg.cli.tile_and_predict import as_flags

    warning = ("a.tif: band 1 mean is 9.0 training standard deviations from the training mean after x/255; results "
               "may be poor - check bands= and normalize= (uint16 here)")
    assert as_flags(warning).endswith("results may be poor - check --bands and --normalize (uint16 here)")


@pytest.mark.parametrize("spec, start", [
    ("local:0", "--cluster local:0: local:N needs 1 <= N <= 512 worker processes"),
    ("tcp://host", "--cluster tcp://host: a scheduler address is PROTOCOL://HOST:PORT"),
])
def test_a_bad_cluster_spec_says_the_flag_and_the_library_its_value(tmp_path, capsys, spec, start):
    from smallseg.cluster.client import parse_cluster

    with pytest.raises(SmallsegError, match=f"^cluster spec {spec}: "):
        parse_cluster(spec)
    line = _one_error_line(capsys, ["dicom-batch", str(tmp_path), "--out", str(tmp_path / "o"), "--cluster", spec])
    assert line.startswith(f"smallseg dicom-batch: error: {start}"), line


def test_outline_options_name_their_fields_and_tile_and_predict_says_simplify(tmp_path, capsys):
    from smallseg.outline import OutlineOptions

    with pytest.raises(SmallsegError, match=r"^simplify_px 99: give a tolerance from 0 to 16 px$"):
        OutlineOptions(simplify_px=99)
    with pytest.raises(SmallsegError, match=r"^regularise_class_names: the model has no class building "):
        OutlineOptions(regularise_class_names=("building",)).for_classes(["nucleus"])
    line = _one_error_line(capsys, ["tile-and-predict", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"),
                                    "--simplify", "99"])
    assert line == "smallseg tile-and-predict: error: --simplify 99.0: give a tolerance from 0 to 16 px", line
