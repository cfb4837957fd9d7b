"""The README's "Python API" block runs as written (issue 13.7): it is extracted from README.md, its file names
are pointed at a small synthetic scene with its ground truth and a real CT slice, and it is executed with the
shipped models. `dir(smallseg)` lists every name the block uses; object tables index and iterate."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

import smallseg
from smallseg.data.remote_sensing import write_remote_sensing_scene

ROOT = Path(__file__).resolve().parents[1]
CT_SLICE = ROOT / "tests" / "data" / "pydicom" / "CT_small.dcm"


def readme_api_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under ## Python API"
    return match.group(1)


@pytest.fixture(scope="module")
def ran(tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp("readme")
    synth = write_remote_sensing_scene(tmp / "synth", 192, 192, seed=5)
    shutil.copy(synth.image, tmp / "scene.tif")
    shutil.copy(synth.instances, tmp / "gt.instances.tif")
    shutil.copy(synth.objects_csv, tmp / "gt.objects.csv")  # the GT's classes, found beside it
    with rasterio.open(synth.image) as src:
        image_chw = src.read()
    code = readme_api_block()
    # Longest names first: "results/scene.instances.tif" before "results/".
    substitutions = {
        '"results/scene.instances.tif"': repr(str(tmp / "results" / "scene.instances.tif")),
        '"results/"': repr(str(tmp / "results")),
        '"scene.tif"': repr(str(tmp / "scene.tif")),
        '"gt.instances.tif"': repr(str(tmp / "gt.instances.tif")),
        '"/data/ct/series_folder"': repr(str(CT_SLICE)),
    }
    for old, new in substitutions.items():
        assert old in code, f"README Python API block no longer uses {old}: update this test"
        code = code.replace(old, new)
    namespace = {"image_chw": image_chw}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace, readme_api_block()


def test_the_readme_python_api_block_runs_and_its_results_are_what_it_says(ran):
    ns, _ = ran
    result, scene, found, report = ns["result"], ns["scene"], ns["found"], ns["report"]
    assert result.n_objects == len(result.objects) > 0 and result.paths["gpkg"].exists()
    first = ns["first"]
    assert first.id == int(result.objects.ids[0]) and first.area_px == int(result.objects.area_px[0])
    assert first._asdict()["class_id"] in (1, 2)
    assert ns["big"] == [int(i) for i in result.objects.ids[result.objects.area_px >= 200]]
    assert scene.labels.shape == (192, 192) and len(scene.ids) == len(scene.class_ids) == len(scene.objects)
    np.testing.assert_array_equal(scene.objects.ids, scene.ids)
    # Test-time augmentation is a setting of the same call: same grid, other maps.
    assert ns["flips"].labels.shape == scene.labels.shape and ns["flips"].labels.max() > 0
    # The in-memory and the GeoTIFF pipelines find the same objects in the same pixels.
    assert len(scene.ids) == result.n_objects
    assert found.volume is ns["volume"] and len(found.objects) == len(found.objects.equivalent_diameter_mm)
    assert report.settings["classes"]["mode"] == "per-class" and "gt.objects.csv" in report.settings["classes"]["gt"]
    assert "AP_small" in report.metrics


def test_dir_smallseg_lists_every_name_the_readme_uses(ran):
    _, block = ran
    used = set(re.findall(r"smallseg\.(\w+)", block))
    assert used and used <= set(dir(smallseg)), used - set(dir(smallseg))
    assert set(smallseg.__all__) == set(dir(smallseg))
    for name in smallseg.__all__:
        assert getattr(smallseg, name) is not None


def test_object_tables_index_slice_and_iterate(ran):
    ns, _ = ran
    table = ns["result"].objects
    rows = list(table)
    assert len(rows) == len(table) and rows[0] == table[0] and rows[-1] == table[-1]
    keep = table.scores > np.median(table.scores)
    subset = table[keep]
    assert type(subset) is type(table) and len(subset) == int(keep.sum())
    assert [r.id for r in subset] == table.ids[keep].tolist()
    with pytest.raises(IndexError):
        table[len(table)]
    with pytest.raises(AttributeError):  # rows are frozen records
        rows[0].score = 1.0
