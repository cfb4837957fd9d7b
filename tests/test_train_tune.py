"""tune-decode picks the grid point with the best metric and stores it in the checkpoint."""

import numpy as np
import pytest
import torch

from smallseg.models import load_checkpoint, save_checkpoint
from smallseg.pipeline.array import decode_config_for
from smallseg.train.data import LabeledImage
from smallseg.train.tune import pick_best, tune_decode, write_tuned_checkpoint


def _images():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        inst = np.zeros((64, 64), np.int32)
        for k in range(1, 6):
            y, x = rng.integers(2, 56, 2)
            inst[y:y + 5, x:x + 5] = k
        out.append(LabeledImage(rng.integers(0, 255, (64, 64, 3)).astype(np.uint8), inst, (inst > 0).astype(np.int32),
                                "test"))
    return out


@pytest.fixture()
def model(tiny_model):
    return tiny_model("resnet18", semantic_bias=[-0.5, 0.5], classes=1, max_distance_px=6, input_scale=1 / 255)


def test_best_row_is_chosen_and_stored(model, tmp_path):
    images = _images()
    grid = {"fg_threshold": [0.3, 0.6], "min_score": [0.0, 0.5]}
    best, rows = tune_decode(model, images, grid=grid, metric="F1", score_thresholds=None, merge_grid=None)
    assert len(rows) == 4
    assert best == {k: max(rows, key=lambda r: r["F1"])[k] for k in grid}
    src = save_checkpoint(model, tmp_path / "m.safetensors")
    out, best2, _ = write_tuned_checkpoint(src, images, tmp_path / "tuned.safetensors", grid=grid, metric="F1")
    # The operating point: min_score re-chosen for the best F1 among the candidate thresholds.
    best = dict(best)
    tuned = load_checkpoint(out)
    assert best2["fg_threshold"] == best["fg_threshold"]
    config = decode_config_for(tuned)
    assert config.fg_threshold == best2["fg_threshold"] and config.min_score == best2["min_score"]
    # The weights are untouched.
    for (n, a), (_, b) in zip(model.state_dict().items(), tuned.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


def test_a_metric_tie_within_the_tolerance_goes_to_the_better_f1():
    rows = [{"id": 0, "AP": 0.243, "F1": 0.25}, {"id": 1, "AP": 0.241, "F1": 0.40}, {"id": 2, "AP": 0.230, "F1": 0.60}]
    assert pick_best(rows, "AP", 0.005)["id"] == 1  # 0.002 below the best AP: a tie, and a far better F1
    assert pick_best(rows, "AP", 0.0)["id"] == 0  # no tolerance: the best AP
    assert pick_best(rows, "AP", 0.02)["id"] == 2
    assert pick_best(rows, "F1", 0.5)["id"] == 2  # maximising F1 itself: the best F1
    rows.append({"id": 3, "AP": None, "F1": 0.9})  # a row the scorer could not rate never wins on AP
    assert pick_best(rows, "AP", 0.005)["id"] == 1


def test_unknown_setting_is_refused(model):
    with pytest.raises(Exception, match="unknown decode setting"):
        tune_decode(model, _images(), grid={"fg_treshold": [0.5]})


def test_operating_point_is_the_best_f1_threshold(model):
    images = _images()
    thresholds = [0.0, 0.3, 0.6, 0.9]
    best, rows = tune_decode(model, images, grid={"fg_threshold": [0.4]}, score_thresholds=thresholds)
    operating = [r for r in rows if r.get("stage") == "operating point"]
    assert [r["min_score"] for r in operating] == thresholds
    assert best["min_score"] == max(operating, key=lambda r: r["F1"])["min_score"]


def test_merge_settings_are_searched_with_the_best_thresholds_fixed(model):
    images = _images()
    grid = {"fg_threshold": [0.3, 0.6]}
    merge_grid = {"merge_fraction": [1.0, 3.0], "vote_error_fraction": [0.25, 0.5]}
    best, rows = tune_decode(model, images, grid=grid, metric="F1", score_thresholds=None, merge_grid=merge_grid)
    first, second = rows[:2], rows[2:]
    assert len(second) == 4
    threshold = max(first, key=lambda r: r["F1"])["fg_threshold"]
    assert all(r["fg_threshold"] == threshold for r in second)
    winner = max(second, key=lambda r: r["F1"])
    assert best == {k: winner[k] for k in ("fg_threshold", "merge_fraction", "vote_error_fraction")}
    # Each stage-2 row is what decoding with its settings really scores.
    from smallseg.decode.components import decode_outputs
    from smallseg.metrics.multi import evaluate_images
    import dataclasses

    row = second[-1]
    config = dataclasses.replace(decode_config_for(model), **{k: row[k] for k in best})
    with torch.no_grad():
        items = [(im.instances, im.classes, decode_outputs(model(torch.from_numpy(model.config.normalise(
            np.moveaxis(im.image, -1, 0)))[None]), config)[0]) for im in images]
    assert evaluate_images(items).metrics["F1"] == pytest.approx(row["F1"])


def test_tuning_for_a_modality_stores_its_settings_apart(model, tmp_path):
    model.config.training = {"decode": {"fg_threshold": 0.9, "min_score": 0.7}}
    src = save_checkpoint(model, tmp_path / "m.safetensors")
    grid = {"fg_threshold": [0.3, 0.6], "min_score": [0.0, 0.5]}
    out, best, rows = write_tuned_checkpoint(src, _images(), tmp_path / "ct.safetensors", grid=grid, metric="F1",
                                             modality="ct")
    assert best["fg_threshold"] == max(rows[:4], key=lambda r: r["F1"])["fg_threshold"]  # stage 1's choice
    tuned = load_checkpoint(out)
    assert tuned.config.training["decode"] == {"fg_threshold": 0.9, "min_score": 0.7}  # the default is kept
    assert tuned.config.training["decode_by_modality"]["CT"] == best
    assert decode_config_for(tuned).fg_threshold == 0.9
    ct = decode_config_for(tuned, modality="ct")
    assert (ct.fg_threshold, ct.min_score) == (best["fg_threshold"], best["min_score"])
    assert decode_config_for(tuned, modality="MR").fg_threshold == 0.9


def test_cli_tune_decode_for_a_modality_needs_marked_validation_entries(model, tmp_path):
    from smallseg.cli import main

    src = save_checkpoint(model, tmp_path / "m.safetensors")
    config = tmp_path / "c.yaml"
    config.write_text("model: {encoder_name: resnet18}\n"
                      "data:\n  val:\n    - {synthetic: nuclei, count: 1, size: 64, seed: 5}\n")
    assert main(["tune-decode", str(src), str(config), "--modality", "CT", "--out", str(tmp_path / "o.safetensors")]) != 0
    assert not (tmp_path / "o.safetensors").exists()
