"""``smallseg finetune`` with box labels (DeepForest CSV): the training targets are the box supervision (votes to
the box centre inside the inscribed ellipse, foreground on its core only, the rest of each box out of the
semantic and distance losses), and a fine-tune runs end to end, validated at box level."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin

from conftest import make_tiny_model
from smallseg.data.labels import ClassMapping
from smallseg.data.labels.auto import read_labels
from smallseg.models import load_checkpoint, save_checkpoint
from smallseg.normalize import Normalization
from smallseg.train.finetune import FinetuneOptions, finetune, split_rows
from smallseg.train.targets import encode_targets

MAX_DISTANCE = 8
BOX = 10  # box side, px


def _scene(tmp_path, size=160, seed=1):
    """Bright discs ('crowns') on a dark ground, each labelled only by its bounding box (pixel edges)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 60, (3, size, size)).astype(np.uint8)
    yy, xx = np.mgrid[0:BOX, 0:BOX] + 0.5 - BOX / 2
    disc = yy ** 2 + xx ** 2 <= (BOX / 2 - 0.5) ** 2
    boxes = []
    for r in range(4, size - BOX - 2, 18):
        for c in range(4, size - BOX - 2, 18):
            r0, c0 = r + int(rng.integers(0, 5)), c + int(rng.integers(0, 5))
            image[:, r0:r0 + BOX, c0:c0 + BOX][:, disc] = 220
            boxes.append((r0, c0, r0 + BOX, c0 + BOX))
    tif = tmp_path / "crowns.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 4000000.0, 0.5, 0.5)) as dst:
        dst.write(image)
    csv = tmp_path / "crowns.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "".join(
        f"crowns.tif,{c0},{r0},{c1},{r1},Tree\n" for r0, c0, r1, c1 in boxes), encoding="utf-8")
    return tif, csv, np.array(boxes, np.float64)


def _init_checkpoint(tmp_path):
    model = make_tiny_model("resnet18", in_channels=3, classes=1, class_names=["tree"], tile_size_px=64,
                            max_distance_px=MAX_DISTANCE)
    norm = Normalization.fixed(1 / 255, mean=[0.3, 0.3, 0.3], std=[0.2, 0.2, 0.2], name="8-bit")
    model.config.training = {"normalization": norm.to_dict(), "decode": {"fg_threshold": 0.5, "min_score": 0.05},
                             "band_names": ["red", "green", "blue"]}
    return save_checkpoint(model, tmp_path / "init.safetensors")


def test_box_targets_of_the_training_part_sit_at_the_box_centres(tmp_path):
    tif, csv, boxes = _scene(tmp_path)
    (item,) = read_labels(tif, csv, classes=ClassMapping(("tree",), {"Tree": "tree"}))
    train, val, info = split_rows(item, 0.2)
    assert item.boxes_only and len(val.boxes) == int(((boxes[:, 0] + boxes[:, 2]) / 2 >= info["split"]).sum())
    part = train.instances.shape[0]
    t = encode_targets(train.instances, train.classes, MAX_DISTANCE)
    whole = [k for k, b in enumerate(boxes) if b[2] <= part]  # boxes wholly in the training part
    assert len(whole) >= 40
    covered = np.zeros(train.instances.shape, bool)
    for k in whole:
        r0, c0, r1, c1 = boxes[k]
        cy, cx = (r0 + r1) / 2 - 0.5, (c0 + c1) / 2 - 0.5  # the box centre in pixel-index coordinates
        ry, rx = (r1 - r0) / 2, (c1 - c0) / 2
        rows, cols = np.mgrid[int(r0):int(r1), int(c0):int(c1)]
        rho = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2  # independent of the encoder's own geometry
        ellipse, core = rho <= 1.0, rho <= 0.25
        ys, xs = rows[ellipse], cols[ellipse]
        # every vote of the ellipse points at the box centre
        np.testing.assert_allclose(ys + t["centroid"][0, ys, xs] * MAX_DISTANCE, cy, atol=1e-4)
        np.testing.assert_allclose(xs + t["centroid"][1, ys, xs] * MAX_DISTANCE, cx, atol=1e-4)
        assert t["centroid_mask"][ys, xs].all()
        window = (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        assert np.array_equal(t["semantic"][window] == 1, core)            # foreground: the core only
        assert np.array_equal(t["ignore"][window], ~core)                  # ring and corners: no semantic loss
        assert t["distance_ignore"][window].all()                          # no shape: no distance loss
        covered[window] = True
    outside = ~covered & (train.instances == 0)
    assert not t["ignore"][outside].any() and not t["semantic"][outside].any()  # background is learnt


def test_finetune_with_box_labels_runs_end_to_end(tmp_path):
    tif, csv, boxes = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    out = tmp_path / "trees.safetensors"
    printed: list[str] = []
    result = finetune(FinetuneOptions(images=(str(tif),), labels=(str(csv),), out=str(out), init=str(init),
                                      minutes=0.5, epochs=2, steps_per_epoch=2, batch_size=2, patience=None,
                                      class_map={"Tree": "tree"}), progress=printed.append)
    assert any(m.startswith("before: validation box F1@0.4") for m in printed)
    assert any(m.startswith("after:  validation box F1@0.4") for m in printed)
    record = load_checkpoint(out).config.training["finetune"]
    split = record["data"]["split"][0]["split"]
    in_val = int(((boxes[:, 0] + boxes[:, 2]) / 2 >= split).sum())  # boxes go where their centre row is
    assert record["before"]["count_gt"] == record["after"]["count_gt"] == in_val
    assert "box_F1" in record["after"] and record["after"]["F1"] == record["after"]["box_F1"]
    assert result.epochs == record["epochs"] == 2 and record["data"]["labels"] == ["crowns.csv"]


def test_worse_than_init_compares_with_the_init_model_tuned_on_the_same_strip(tmp_path):
    """With next to no training (lr 1e-12) the fine-tuned model is the init model, so the init model with decode
    settings tuned on the same validation strip scores exactly what the 'fine-tuned' one does: decode tuning is
    not counted as a training gain."""
    tif, csv, _boxes = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    result = finetune(FinetuneOptions(images=(str(tif),), labels=(str(csv),), out=str(tmp_path / "same.safetensors"),
                                      init=str(init), minutes=0.5, epochs=1, steps_per_epoch=1, batch_size=2,
                                      lr=1e-12, patience=None, class_map={"Tree": "tree"}), progress=None)
    record = result.record
    assert {k: v for k, v in record["before_tuned"].items() if k != "decode"} == record["after"]
    assert record["before_tuned"]["decode"] == record["decode_tuned"]
    assert record["worse_than_init"] is False
