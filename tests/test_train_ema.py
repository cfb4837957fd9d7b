"""The moving average of the weights (``optim.ema_decay``): what is validated and kept as best is the average
of the raw weights after each step, the raw weights go on training, and a resumed run carries the average."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from smallseg.errors import SmallsegError
from smallseg.train.loop import load_train_config, train

from train_helpers import tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTIM = {"epochs": 1, "batch_size": 2, "warmup_steps": 1}


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items() if v.is_floating_point()}


def test_best_checkpoint_is_the_average_of_the_steps_raw_weights(tmp_path):
    # Run A stops after its first step: its raw weights are w1. Run B takes the same first step (samples are a
    # pure function of seed, epoch and index; warm-up of one step gives step 1 the same learning rate) and one
    # more (w2). With decay 0.5 the average is w1 after the first update, then 0.5 * w1 + 0.5 * w2.
    a = train(load_train_config(tiny_train_config(tmp_path / "a", optim={**OPTIM, "steps_per_epoch": 1})),
              tmp_path / "a" / "run", progress=False)
    b = train(load_train_config(tiny_train_config(tmp_path / "b", optim={**OPTIM, "steps_per_epoch": 2,
                                                                          "ema_decay": 0.5})),
              tmp_path / "b" / "run", progress=False)
    w1, w2, kept = _weights(a.last_checkpoint), _weights(b.last_checkpoint), _weights(b.best_checkpoint)
    assert w1.keys() == w2.keys() == kept.keys()
    moved = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    assert moved, "the second step changed nothing: the test could not tell the average from either step"
    for k in w1:
        torch.testing.assert_close(kept[k], 0.5 * w1[k] + 0.5 * w2[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(kept[k], w2[k]) for k in moved)  # best is not the raw last weights


def test_resume_continues_the_same_average(tmp_path):
    optim = {**OPTIM, "epochs": 2, "steps_per_epoch": 1, "ema_decay": 0.7}
    whole = train(load_train_config(tiny_train_config(tmp_path / "w", optim=optim)), tmp_path / "w" / "run",
                  progress=False)
    config = load_train_config(tiny_train_config(tmp_path / "r", optim=optim))
    train(config, tmp_path / "r" / "run", progress=False, stop_after_epochs=1)
    resumed = train(config, tmp_path / "r" / "run", progress=False, resume=True)
    ema_whole = torch.load(tmp_path / "w" / "run" / "state.pt", weights_only=True)["ema"]
    ema_resumed = torch.load(tmp_path / "r" / "run" / "state.pt", weights_only=True)["ema"]
    assert ema_whole.keys() == ema_resumed.keys() and int(ema_resumed["n_averaged"]) == 2
    for k in ema_whole:
        assert torch.equal(ema_whole[k], ema_resumed[k]), k
    assert len(resumed.history) == len(whole.history) == 2


def test_a_bad_decay_is_one_line(tmp_path):
    with pytest.raises(SmallsegError, match="ema_decay 1.5: must be a number between 0 and 1"):
        load_train_config(tiny_train_config(tmp_path, optim={**OPTIM, "steps_per_epoch": 1, "ema_decay": 1.5}))
