"""The split recipe in datasets/ and the `smallseg synth` command."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import SimpleITK as sitk
import tifffile
from pycocotools.coco import COCO

from smallseg.cli import main
from smallseg.data.recipe import generate_from_recipe, load_recipe
from smallseg.errors import SmallsegError

RECIPE = Path(__file__).resolve().parents[1] / "datasets" / "synthetic.yaml"


def test_recipe_splits_have_disjoint_seeds_and_known_parameters():
    recipe = load_recipe(RECIPE)
    assert set(recipe) == {"remote_sensing", "ct", "nuclei"}
    for kind, splits in recipe.items():
        assert {"train", "val", "test"} <= set(splits)
        seeds = [set(range(e["seed"], e["seed"] + e["count"])) for e in splits.values()]
        assert sum(len(s) for s in seeds) == len(set().union(*seeds))


def test_overlapping_seed_ranges_and_unknown_parameters_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nuclei:\n  splits:\n    train: {seed: 0, count: 10}\n    test: {seed: 5, count: 2}\n")
    with pytest.raises(SmallsegError, match="overlap"):
        load_recipe(bad)
    bad.write_text("nuclei:\n  params: {diameter: 3}\n  splits:\n    train: {seed: 0, count: 1}\n")
    with pytest.raises(SmallsegError, match="unknown parameter"):
        load_recipe(bad)


def test_recipe_smoke_run_writes_every_format(tmp_path):
    out = generate_from_recipe(RECIPE, tmp_path, splits=["val"], limit=1)
    recipe = load_recipe(RECIPE)
    rs_seed, ct_seed, nu_seed = (recipe[k]["val"]["seed"] for k in ("remote_sensing", "ct", "nuclei"))
    image = out["remote_sensing"]["val"][0]
    assert image.name == f"scene_{rs_seed}_image.tif"
    with rasterio.open(image) as src:
        assert src.shape == (1024, 1024) and src.transform.a == recipe["remote_sensing"]["val"]["pixel_size_m"][0]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "remote_sensing" / "val" / "coco" / "annotations.json"))
    assert len(coco.getImgIds()) == 9 and len(coco.getAnnIds()) > 0
    case = tmp_path / "ct" / "val" / f"case_{ct_seed}"
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case / "dicom"))
    assert len(names) == 64
    assert len(json.loads((case / "nodules.json").read_text())["nodules"]) >= 1
    labels = tifffile.imread(tmp_path / "nuclei" / "val" / f"nuclei_{nu_seed}_labels.tif")
    assert labels.shape == (256, 256) and labels.max() > 0


def test_synth_cli_writes_files_and_reports_bad_options(tmp_path, capsys):
    assert main(["synth", "nuclei", "--out", str(tmp_path / "n"), "--seed", "3", "--count", "2",
                 "--size", "64", "80"]) == 0
    labels = tifffile.imread(tmp_path / "n" / "nuclei_4_labels.tif")
    assert labels.shape == (64, 80)
    assert main(["synth", "remote-sensing", "--out", str(tmp_path / "r"), "--size", "96", "96", "--seed", "2",
                 "--bands", "4", "--dtype", "uint16", "--coco-tile-px", "64", "--coco-overlap-px", "8"]) == 0
    with rasterio.open(tmp_path / "r" / "scene_2_image.tif") as src:
        assert src.count == 4 and src.dtypes[0] == "uint16"
    assert (tmp_path / "r" / "coco" / "annotations.json").exists()
    assert main(["synth", "ct", "--out", str(tmp_path / "c"), "--size", "64", "64", "4", "--nodules", "0"]) == 0
    assert len(list((tmp_path / "c" / "case_0" / "dicom").glob("*.dcm"))) == 4
    capsys.readouterr()
    assert main(["synth", "remote-sensing", "--out", str(tmp_path / "x"), "--crs", "EPSG:4326"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smallseg synth: error: --crs EPSG:4326") and "\n" not in err
    assert not (tmp_path / "x" / "scene_0_image.tif").exists()
