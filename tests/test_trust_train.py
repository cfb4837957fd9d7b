"""smallseg train trusts nothing it reads and loses no run (#11): an existing run folder is refused without
--resume / --overwrite, one writer per run folder, config typos named in one line with the closest key,
a tampered state.pt refused as data."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.io.atomic import OutputLock
from smallseg.train.loop import load_train_config, train

from train_helpers import tiny_train_config as _tiny_config


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(["train", *map(str, argv), "--quiet"])
    return code, capsys.readouterr().err.strip()


# ---- 1. an existing run folder -------------------------------------------------------------------------------


def test_existing_run_folder_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    path = _tiny_config(tmp_path)
    run = tmp_path / "run"
    assert _cli(capsys, path, "--out", run) == (0, "")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {"last.safetensors", "best.safetensors", "state.pt", "history.jsonl"} <= set(before)

    code, err = _cli(capsys, path, "--out", run)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "holds an earlier training run" in err and "--resume" in err and "--overwrite" in err
    assert "resume=True" not in err  # the CLI speaks in flags
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing lost, not even history.jsonl

    code, err = _cli(capsys, path, "--out", run, "--resume", "--overwrite")
    assert code == 2 and "choose one" in err

    assert _cli(capsys, path, "--out", run, "--overwrite") == (0, "")
    assert (run / "history.jsonl").read_text().count("\n") == 1  # a fresh run, not appended


def test_overwrite_removes_the_earlier_results_before_starting(tmp_path):
    path = _tiny_config(tmp_path)
    run = tmp_path / "run"
    train(load_train_config(path), run, progress=False)
    config = load_train_config(path)
    config.data = {"train": []}  # fails before the first epoch
    with pytest.raises(SmallsegError, match="lists no images"):
        train(config, run, progress=False, overwrite=True, train_images=[])
    # what is left cannot pass for the new run's results
    assert not any((run / name).exists() for name in ("last.safetensors", "best.safetensors", "state.pt"))


def test_a_second_training_into_one_run_folder_is_refused(tmp_path, capsys):
    path = _tiny_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    # Another process holds the run folder's lock (as a running `smallseg train` does).
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from smallseg.io.atomic import OutputLock
        with OutputLock({str(run / '.smallseg.lock')!r}):
            print('locked', flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _cli(capsys, path, "--out", run, "--overwrite")
        assert code == 2 and len(err.splitlines()) == 1
        assert f"in use by process {holder.pid}" in err
        assert not (run / "config.yaml").exists()  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the folder is usable again
    with OutputLock(run / ".smallseg.lock"):
        pass


# ---- tampered state.pt ---------------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("tamper", ["pickle_code", "truncated", "wrong_shape"])
def test_a_tampered_state_pt_is_refused_in_one_line(tmp_path, capsys, monkeypatch, tamper):
    monkeypatch.chdir(tmp_path)
    path = _tiny_config(tmp_path)
    run = tmp_path / "run"
    train(load_train_config(path), run, progress=False, stop_after_epochs=None)
    config = yaml.safe_load(path.read_text())
    config["optim"]["epochs"] = 2
    path.write_text(yaml.safe_dump(config))
    state = run / "state.pt"
    if tamper == "pickle_code":
        state.write_bytes(pickle.dumps({"epoch": 0, "best": 0.0, "x": _Payload()}))
    elif tamper == "truncated":
        state.write_bytes(state.read_bytes()[:200])
    else:
        torch.save({"epoch": "zero", "best": 0.0, "optimizer": {}, "scheduler": {}, "scaler": {},
                    "torch_rng": torch.get_rng_state()}, state)
    code, err = _cli(capsys, path, "--out", run, "--resume")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "state.pt" in err and "--overwrite" in err
    assert not (tmp_path / "PWNED").exists()


# ---- 2. typos in the config's sections -----------------------------------------------------------------------


@pytest.mark.parametrize("section, value, needle", [
    ("loss", {"semantic_wieght": 2.0}, "loss: unknown key 'semantic_wieght' (did you mean semantic_weight?)"),
    ("loss", {"class_weights": "1,3"}, "loss.class_weights: expected a list"),
    ("loss", {"distance_weight": "high"}, "loss.distance_weight: expected a number"),
    ("decode", {"fg_treshold": 0.4}, "decode: unknown key 'fg_treshold' (did you mean fg_threshold?)"),
    ("decode", {"min_score": [0.1]}, "decode.min_score: expected a number"),
    ("optim", {"epocs": 3}, "optim: unknown key 'epocs' (did you mean epochs?)"),
    ("data", {"train": [{"synthetic": "nuclei", "cont": 4}]},
     "data.train[0] (synthetic): unknown key 'cont' (did you mean count?)"),
    ("data", {"train": [{"synthetic": "nuclei", "options": {"mean_diamter_px": 9}}]},
     "synthetic nuclei options: unknown key 'mean_diamter_px' (did you mean mean_diameter_px?)"),
    ("data", {"train": [{"synthetic": "nuclie"}]}, "synthetic: unknown kind 'nuclie'"),
    ("data", {"train": [{"geotiff": {"image": "a.tif", "instance": "b.tif"}}]},
     "data.train[0]: geotiff: unknown key 'instance' (did you mean instances?)"),
    ("data", {"train": [{"coco": {"annotations": "a.json", "images": "i/"}, "modalty": "CT"}]},
     "(coco): unknown key 'modalty' (did you mean modality?)"),
    ("data", {"trian": []}, "data: unknown key 'trian' (did you mean train?)"),
    ("data", {"train": {"synthetic": "nuclei"}}, "data.train: expected a list"),
    ("loss", [1, 2], "loss: expected a mapping"),
])
def test_config_typos_name_the_key_and_the_closest_allowed_one(tmp_path, capsys, section, value, needle):
    path = _tiny_config(tmp_path, **{section: value})
    with pytest.raises(SmallsegError) as info:
        load_train_config(path)
    assert needle in str(info.value), str(info.value)
    assert "allowed:" in str(info.value) or "expected" in str(info.value) or "unknown kind" in str(info.value)
    code, err = _cli(capsys, path, "--out", tmp_path / "run")
    assert code == 2 and len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_typo_in_a_base_file_section_names_the_closest_section(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {}\ndata: {}\ndecod: {}\n")
    with pytest.raises(SmallsegError, match=r"unknown section\(s\) \['decod'\] \(did you mean decode\?\)"):
        load_train_config(tmp_path / "a.yaml")


def test_every_shipped_training_config_still_loads():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_train_config(path)


def test_resume_without_a_finished_epoch_names_the_flag(tmp_path, capsys):
    # The library says resume=True (a Python caller passes that); the command line says --resume.
    path = _tiny_config(tmp_path)
    with pytest.raises(SmallsegError, match=r"^resume=True: .* has no finished epoch to resume from"):
        train(load_train_config(path), tmp_path / "lib", resume=True, progress=False)
    code, err = _cli(capsys, path, "--out", tmp_path / "run", "--resume")
    assert code == 2 and err.startswith("smallseg train: error: --resume: ") and "has no finished epoch" in err, err
    assert len(err.splitlines()) == 1
