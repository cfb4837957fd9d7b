"""``smallseg finetune`` re-fits its schedule after epoch 1, with an injected clock (no wall time): the pace
estimated before training said 42 s per epoch, epoch 1 really took 30 s, so the 4-minute budget holds 8 epochs,
not 5; the learning rate's cosine then ends at the 8th."""

from __future__ import annotations

import json

import numpy as np
import pytest

import smallseg.train.finetune as finetune_module
import smallseg.train.loop as loop_module
from smallseg.models import load_checkpoint
from smallseg.train.finetune import FinetuneOptions, finetune, refit_epochs, run_dir_of
from test_finetune_boxes import _init_checkpoint, _scene


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("done, epoch_s, elapsed_s, budget_s, max_epochs, expected", [
    (1, 30.0, 30.0, 240.0, 200, 8),    # faster than planned: 1 + 210 // 30
    (1, 100.0, 100.0, 240.0, 200, 2),  # slower: 1 + 140 // 100
    (1, 300.0, 300.0, 240.0, 200, 1),  # the first epoch already overran: stop after it
    (1, 1.0, 1.0, 240.0, 20, 20),      # capped at max_epochs
    (3, 10.0, 50.0, 100.0, 200, 8),    # 3 done + 50 // 10
])
def test_refit_epochs(done, epoch_s, elapsed_s, budget_s, max_epochs, expected):
    assert refit_epochs(done, epoch_s, elapsed_s, budget_s, max_epochs) == expected


def _fake_time(monkeypatch, validation_s) -> FakeClock:
    """A fake clock for finetune and the loop: the estimate is 6 s per optimiser step, steps cost none, and the
    n-th validation (finetune scores the init model with it too) costs ``validation_s(n)`` seconds."""
    clock = FakeClock()
    monkeypatch.setattr(finetune_module, "_clock", clock)
    monkeypatch.setattr(loop_module, "_clock", clock)
    monkeypatch.setattr(finetune_module, "_seconds_per_step", lambda *a, **k: 6.0)
    real_validate = loop_module.validate
    calls = []

    def validate(*args, **kwargs):
        calls.append(1)
        clock.now += validation_s(len(calls))
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop_module, "validate", validate)
    monkeypatch.setattr(finetune_module, "validate", validate)
    return clock


def test_schedule_is_refitted_after_epoch_1_with_an_injected_clock(tmp_path, monkeypatch):
    tif, csv, _boxes = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    _fake_time(monkeypatch, lambda call: 30.0)
    out = tmp_path / "trees.safetensors"
    printed: list[str] = []
    # budget 300 s - 60 s (before-score and the validation timing) = 240 s; planned: 240 // (2 * 6 + 30) = 5
    result = finetune(FinetuneOptions(images=(str(tif),), labels=(str(csv),), out=str(out), init=str(init),
                                      minutes=5, steps_per_epoch=2, batch_size=2, patience=None, tune=False,
                                      lr=1e-3, class_map={"Tree": "tree"}), progress=printed.append)
    assert any(m.startswith("schedule: 5 epochs") for m in printed), printed
    assert any("re-fitted after epoch 1 (30.0 s): 5 -> 8 epochs" in m for m in printed), printed
    assert result.epochs == 8 and result.stopped == "epochs"
    record = load_checkpoint(out).config.training["finetune"]
    assert record["planned_epochs"] == 8 and record["refit"] == {"after_epoch": 1, "planned_epochs": 5,
                                                                 "epochs": 8, "epoch_s": 30.0}
    history = [json.loads(line) for line in (run_dir_of(out) / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, 9))
    assert all(r["epoch_seconds"] == 30.0 for r in history)
    # the cosine was stretched to 8 epochs: it reaches its floor (lr * min_lr_ratio) at the last step, not
    # at epoch 5 (a 5-epoch schedule would be at its floor there and then stop)
    lrs = np.array([r["lr"] for r in history])
    assert lrs[-1] == pytest.approx(1e-3 * 0.02, rel=1e-6)
    assert lrs[4] > 3 * lrs[-1]
    assert json.loads((run_dir_of(out) / "finetune.json").read_text())["epochs"] == 8  # a resume follows it


def test_a_slow_first_epoch_is_corrected_after_the_second(tmp_path, monkeypatch):
    """Epoch 1 pays one-off costs (here 60 s more); epoch 2's steady pace re-fits the schedule again, so the
    budget is used instead of ending early."""
    tif, csv, _boxes = _scene(tmp_path)
    init = _init_checkpoint(tmp_path)
    # calls 1-2: finetune's before-score and validation timing; call 3: the end of epoch 1
    _fake_time(monkeypatch, lambda call: 90.0 if call == 3 else 30.0)
    out = tmp_path / "trees.safetensors"
    printed: list[str] = []
    # planned: 240 // (2 * 6 + 30) = 5 epochs; epoch 1 takes 90 s -> 1 + 150 // 90 = 2; epoch 2 takes 30 s
    # -> 2 + 120 // 30 = 6
    result = finetune(FinetuneOptions(images=(str(tif),), labels=(str(csv),), out=str(out), init=str(init),
                                      minutes=5, steps_per_epoch=2, batch_size=2, patience=None, tune=False,
                                      lr=1e-3, class_map={"Tree": "tree"}), progress=printed.append)
    assert any("re-fitted after epoch 1 (90.0 s): 5 -> 2 epochs" in m for m in printed), printed
    assert any("re-fitted after epoch 2 (30.0 s): 2 -> 6 epochs" in m for m in printed), printed
    assert result.epochs == 6
    record = load_checkpoint(out).config.training["finetune"]
    assert record["refit"] == {"after_epoch": 2, "planned_epochs": 2, "epochs": 6, "epoch_s": 30.0}
