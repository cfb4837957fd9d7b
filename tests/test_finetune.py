"""smallseg finetune: a GeoTIFF + GeoJSON fine-tune end to end (tiny model, tiny budget), the held-out split,
--resume, and bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from pyogrio.raw import read as pyogrio_read
from pyogrio.raw import write as pyogrio_write
from rasterio.transform import from_origin

from conftest import make_tiny_model
from smallseg.cli import main
from smallseg.data.labels.common import LabeledImage
from smallseg.errors import SmallsegError
from smallseg.models import load_checkpoint, save_checkpoint
from smallseg.normalize import Normalization
from smallseg.pipeline.classes import trained_modalities
from smallseg.train.finetune import FinetuneOptions, curve_path_of, finetune, run_dir_of, split_rows

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 0.5, 0.5)
NORM = Normalization.fixed(1 / 255, mean=[0.3, 0.3, 0.3], std=[0.2, 0.2, 0.2], name="8-bit")


def _scene(tmp_path, size=160, seed=0):
    """A 3-band uint8 GeoTIFF with bright 6x6 px 'cars' on a dark ground, and their squares in a GeoJSON."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 60, (3, size, size)).astype(np.uint8)
    squares = []
    for r in range(6, size - 12, 16):
        for c in range(6, size - 12, 16):
            rr, cc = r + int(rng.integers(0, 4)), c + int(rng.integers(0, 4))
            image[:, rr:rr + 6, cc:cc + 6] = 220
            x0, y0 = TRANSFORM * (cc, rr)
            x1, y1 = TRANSFORM * (cc + 6, rr + 6)
            squares.append(shapely.box(x0, y1, x1, y0))
    tif = tmp_path / "scene.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as dst:
        dst.write(image)
    gj = tmp_path / "cars.geojson"
    pyogrio_write(gj, geometry=shapely.to_wkb(np.array(squares, dtype=object)),
                  field_data=[np.array(["car"] * len(squares), dtype=object)], fields=["cls"], crs=CRS,
                  driver="GeoJSON", geometry_type="Polygon")
    return tif, gj, len(squares)


def _init_checkpoint(tmp_path):
    model = make_tiny_model("resnet18", in_channels=3, classes=2, class_names=["car", "building"], tile_size_px=64,
                            max_distance_px=8)
    model.config.training = {"normalization": NORM.to_dict(), "decode": {"fg_threshold": 0.5, "min_score": 0.05},
                             "band_names": ["red", "green", "blue"]}
    return save_checkpoint(model, tmp_path / "init.safetensors")


def test_finetune_cli_from_geotiff_and_geojson_end_to_end(tmp_path, capsys):
    tif, gj, n = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    out = tmp_path / "my.safetensors"
    code = main(["finetune", str(tif), "--labels", str(gj), "--init", str(init), "--out", str(out), "--minutes", "0.25",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--patience", "2", "--classes", "car"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "before: validation F1@0.5" in printed and "after:  validation F1@0.5" in printed
    assert "ETA" in printed
    model = load_checkpoint(out)
    record = model.config.training["finetune"]
    assert record["data"]["images"] == ["scene.tif"] and record["data"]["labels"] == ["cars.geojson"]
    assert record["data"]["train_objects"] + record["data"]["val_objects"] >= n  # cars on the split line in both
    assert set(record["before"]) >= {"F1", "AP"} and set(record["after"]) >= {"F1", "AP"}
    assert record["epochs"] == len(record["history"]) >= 1
    assert record["settings"]["init"] == str(init)
    # the init model's declared normalisation and bands are what the fine-tuned model applies
    assert Normalization.from_dict(model.config.training["normalization"]) == NORM
    assert model.config.training["band_names"] == ["red", "green", "blue"]
    json.dumps(model.config.training)  # bounded JSON, loadable (load_checkpoint validated it)
    curve = curve_path_of(out)
    with Image.open(curve) as im:
        im.verify()
    with Image.open(curve) as im:
        assert im.format == "PNG" and im.size[0] > 100 and len(set(np.asarray(im).ravel().tolist())) > 2
    # and the checkpoint runs in tile-and-predict
    pred_dir = tmp_path / "pred"
    assert main(["tile-and-predict", str(tif), "--model", str(out), "--out", str(pred_dir), "--device", "cpu"]) == 0
    assert any(pred_dir.glob("*.tif"))


def test_validation_rows_never_reach_training():
    h, w = 200, 40
    rows = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1)[:, :, None]  # pixel value = its row
    instances = np.zeros((h, w), np.int32)
    for k, r in enumerate(range(10, 190, 20)):
        instances[r:r + 6, 10:16] = k + 1
    instances[:20] = -1  # not labelled above row 20
    item = LabeledImage(image=rows, instances=instances, classes=(instances > 0).astype(np.int32), name="rows")
    train, val, info = split_rows(item, 0.2)
    assert info == {"row0": 20, "split": 164, "row1": 200}  # 36 rows = 20 % of the 180 labelled rows
    assert train.image.max() < info["split"] <= val.image.min()
    assert train.image.min() >= info["row0"]  # unlabelled rows above are not used either
    assert (val.instances > 0).any()
    with pytest.raises(SmallsegError, match="labelled rows"):
        split_rows(item.crop_rows(0, 80, ""), 0.2)


def test_finetune_training_crops_come_from_the_training_part_only(tmp_path, monkeypatch):
    """The crops finetune trains on are cut from the training part: their rows never reach the split."""
    from smallseg.train import finetune as finetune_module
    from smallseg.train import loop

    tif, gj, _ = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    seen = {}
    real_train = loop.train

    def recording_train(config, run_dir, **kwargs):
        seen["train"], seen["val"] = kwargs["train_images"], kwargs["val_images"]
        return real_train(config, run_dir, **kwargs)

    monkeypatch.setattr(finetune_module, "train", recording_train)
    result = finetune(FinetuneOptions(images=(str(tif),), labels=(str(gj),), out=str(tmp_path / "a.safetensors"),
                                      init=str(init), minutes=1, epochs=1, steps_per_epoch=1, batch_size=2,
                                      tune=False, class_name="car"), progress=None)
    split = result.record["data"]["split"][0]
    assert [im.instances.shape[0] for im in seen["train"]] == [split["split"] - split["row0"]]
    assert [im.instances.shape[0] for im in seen["val"]] == [split["row1"] - split["split"]]
    with rasterio.open(tif) as src:
        pixels = np.moveaxis(src.read(), 0, -1)
    assert np.array_equal(seen["train"][0].image, pixels[split["row0"]:split["split"]])
    assert np.array_equal(seen["val"][0].image, pixels[split["split"]:split["row1"]])


def test_resume_continues_from_the_saved_epoch(tmp_path):
    tif, gj, _ = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    out = tmp_path / "r.safetensors"
    epochs = 8  # more than a one-second budget holds on any machine here, so the first call always stops early
    common = dict(images=(str(tif),), labels=(str(gj),), out=str(out), init=str(init), epochs=epochs,
                  steps_per_epoch=1, batch_size=2, tune=False, class_name="car", patience=None)
    # A budget of a second stops the first call after an epoch or a few, as a kill would (the state is per epoch);
    # how many depends on the machine's speed, so the checks below follow what it did.
    first = finetune(FinetuneOptions(**common, minutes=1 / 60), progress=None)
    done = first.epochs
    assert 1 <= done < epochs and first.stopped == "time budget"
    messages = []
    second = finetune(FinetuneOptions(**common, minutes=5, resume=True), progress=messages.append)
    assert any("resuming" in m and f"{done} epoch(s) done" in m for m in messages)
    assert [m.split(":")[0] for m in messages if m.startswith("epoch ")] == [
        f"epoch {e}/{epochs}" for e in range(done + 1, epochs + 1)]
    history = [json.loads(line) for line in (run_dir_of(out) / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    assert second.epochs == epochs and second.before == first.before
    assert load_checkpoint(out).config.training["finetune"]["epochs"] == epochs


def test_resume_with_other_labels_is_refused(tmp_path):
    tif, gj, _ = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    run = run_dir_of(tmp_path / "x.safetensors")
    run.mkdir()
    (run / "finetune.json").write_text(json.dumps({"epochs": 2, "crop_size": 64, "before": {}, "data": {"split": []}}))
    with pytest.raises(SmallsegError, match="other images"):
        finetune(FinetuneOptions(images=(str(tif),), labels=(str(gj),), out=str(tmp_path / "x.safetensors"),
                                 init=str(init), class_name="car", resume=True), progress=None)


@pytest.mark.parametrize("argv_tail, message", [
    (["--classes", "tree"], "class 'tree'"),
    (["--labels", "a.geojson", "b.geojson"], "1 image(s) but 2 label file(s)"),
    (["--minutes", "0"], "--minutes 0"),
])
def test_bad_finetune_input_is_one_line(tmp_path, capsys, argv_tail, message):
    tif, gj, _ = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    argv = ["finetune", str(tif), "--labels", str(gj), "--init", str(init), "--out", str(tmp_path / "o.safetensors")]
    if argv_tail[0] == "--labels":
        argv = argv[:3] + [str(tmp_path / p) for p in argv_tail[1:]] + argv[4:]
    else:
        argv += argv_tail
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_dicom_seg_labels_of_a_dicom_series(tmp_path):
    """A DICOM series + the DICOM SEG dicom-batch writes for it read back as slices whose objects are the
    labels' 3-D components, classed by segment label; read_labels picks the reader from the .dcm suffix."""
    from medical_helpers import random_hu, write_series

    from smallseg.data.labels import ClassMapping
    from smallseg.data.labels.auto import read_labels
    from smallseg.io.medical import read_volume
    from smallseg.pipeline.dicom_batch import write_dicom_seg

    pytest.importorskip("highdicom")
    hu = random_hu((6, 32, 40), seed=3)
    labels = np.zeros(hu.shape, np.int32)
    labels[1:4, 4:10, 5:12] = 1   # one object over three slices
    labels[2, 20:26, 25:33] = 2   # one object on one slice
    series = tmp_path / "series"
    write_series(series, hu)
    volume = read_volume(series)
    seg = write_dicom_seg(labels, np.array([1, 1]), volume, tmp_path / "seg.dcm", class_names=["nodule"])
    classes = ClassMapping(("nucleus", "nodule"))
    slices = read_labels(series, seg, classes=classes)
    by_z = {int(item.name.rsplit(" ", 1)[1]): item for item in slices}
    assert set(by_z) >= {1, 2, 3} and len(slices) == 6  # 3 with objects + 3 without
    ids_of_first = {int(np.unique(by_z[z].instances[4:10, 5:12])[0]) for z in (1, 2, 3)}
    assert len(ids_of_first) == 1  # the same 3-D object on every slice
    for z, item in by_z.items():
        assert np.array_equal(item.instances > 0, labels[z] > 0)
        assert set(np.unique(item.classes[item.instances > 0]).tolist()) <= {2}
        assert np.array_equal(item.image[:, :, 0], volume.array[z]) and item.modality == "CT"
    assert len(np.unique(by_z[2].instances[by_z[2].instances > 0])) == 2
    with pytest.raises(SmallsegError, match="class 'nodule'"):
        read_labels(series, seg, classes=ClassMapping(("nucleus",)))


def test_a_training_part_without_objects_is_refused_before_training(tmp_path, capsys):
    # Objects only in the bottom rows of the labelled area: the validation strip gets them all, training none.
    tif, gj, _ = _scene(tmp_path)
    _, _, wkb, fields = pyogrio_read(gj)
    geoms = shapely.from_wkb(wkb)
    _, y_top = TRANSFORM * (0, 128)  # the validation strip: the bottom 20 % of rows 0:160
    bottom = np.array([g.bounds[3] <= y_top for g in geoms])
    assert 0 < bottom.sum() < len(geoms)
    only_bottom = tmp_path / "bottom.geojson"
    pyogrio_write(only_bottom, geometry=shapely.to_wkb(geoms[bottom]), field_data=[fields[0][bottom]], fields=["cls"],
                  crs=CRS, driver="GeoJSON", geometry_type="Polygon")
    init = _init_checkpoint(tmp_path)
    out = tmp_path / "o.safetensors"
    assert main(["finetune", str(tif), "--labels", str(only_bottom), "--init", str(init), "--out", str(out),
                 "--area", "rows=0:160", "--classes", "car"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no object" in err[0] and "Traceback" not in err[0]
    assert not out.exists() and not run_dir_of(out).exists()



def test_finetune_keeps_only_the_modalities_of_its_data(tmp_path):
    """An init model that also declared CT settings: fine-tuned on a GeoTIFF (no modality), the CT window and CT
    decode settings are dropped and the checkpoint says which modalities it serves."""
    tif, gj, _ = _scene(tmp_path)
    common = dict(images=(str(tif),), labels=(str(gj),), minutes=1, epochs=1, steps_per_epoch=1, batch_size=2,
                  tune=False, class_name="car")
    # an init model that says nothing about modalities: "" keeps all its classes, not only the labelled one
    plain = tmp_path / "plain.safetensors"
    finetune(FinetuneOptions(**common, out=str(plain), init=str(_init_checkpoint(tmp_path))), progress=None)
    assert load_checkpoint(plain).config.training["classes_by_modality"] == {"non-DICOM": ["car", "building"]}

    init = load_checkpoint(_init_checkpoint(tmp_path))
    windows = {m: Normalization.window((40.0, 400.0), mean=[0.3] * 3, std=[0.2] * 3, name=m).to_dict() for m in ("CT", "SM")}
    init.config.training = {**init.config.training, "normalization_by_modality": windows,
                            "decode_by_modality": {"CT": {"fg_threshold": 0.7, "min_score": 0.3}},
                            "classes_by_modality": {"CT": ["building"], "non-DICOM": ["car"], "SM": ["car"]}}
    init_path = save_checkpoint(init, tmp_path / "init-ct.safetensors")
    out = tmp_path / "m.safetensors"
    finetune(FinetuneOptions(**common, out=str(out), init=str(init_path)), progress=None)
    training = load_checkpoint(out).config.training
    # SM (the same class as the data's "") stays with its window; CT (a class the data did not cover) goes
    assert training["classes_by_modality"] == {"non-DICOM": ["car"], "SM": ["car"]}
    assert trained_modalities(load_checkpoint(out).config) == {"", "SM"}
    assert training["normalization_by_modality"] == {"SM": windows["SM"]}
    assert "decode_by_modality" not in training
    assert training["band_names"] == ["red", "green", "blue"]


def test_a_2p5d_init_model_is_refused_in_one_line(tmp_path, capsys):
    """The shipped ct model takes each slice with its neighbours; label sources give single slices."""
    tif, gj, _ = _scene(tmp_path)
    argv = ["finetune", str(tif), "--labels", str(gj), "--init", "ct", "--out", str(tmp_path / "o.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is 2.5-D (slice_context 2" in err[0]
    assert not (tmp_path / "o.safetensors").exists()
