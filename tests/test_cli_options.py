"""The option helpers the subcommands share (smallseg/cli/options.py): library messages in Python names become
the subcommand's flags, integer ranges are checked in one line naming the flag, and every subcommand that runs
a model explains --device the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from smallseg.cli import build_parser, main
from smallseg.cli.options import DEVICE_HELP, FlagNames, require_at_least
from smallseg.errors import SmallsegError

ROOT = Path(__file__).resolve().parents[1]
FLAGS = FlagNames({"min_area_px": "--min-area", "device": "--device"}, {"resume=True": "--resume"})


@pytest.mark.parametrize("message, expected", [
    ("min_area_px 0: must be at least 1", "--min-area 0: must be at least 1"),  # first word
    ("keep min_area_px below 5", "keep --min-area below 5"),  # an identifier, anywhere
    ("device 'tpu': unknown", "--device 'tpu': unknown"),  # a plain word as the first word
    ("no CUDA device here", "no CUDA device here"),  # ... but never inside English text
    ("OUT holds a run; pass resume=True", "OUT holds a run; pass --resume"),  # a phrase
    ("min_area_pxx is not ours", "min_area_pxx is not ours"),  # whole identifiers only
    ("check device= and min_area_px=.", "check --device and --min-area."),  # bare keywords
    ("device='cpu' was given", "device='cpu' was given"),  # ... not a keyword with its value
])
def test_flag_names_spell_python_names_as_flags(message, expected):
    assert FLAGS(message) == expected


def test_require_at_least_names_the_flag_and_lets_unset_values_pass():
    require_at_least(1, epochs=None, batch_size=1)
    with pytest.raises(SmallsegError, match=r"^--steps-per-epoch 0: must be at least 1$"):
        require_at_least(1, batch_size=4, steps_per_epoch=0)


@pytest.mark.parametrize("argv, line", [
    (["train", str(ROOT / "configs" / "remote-sensing.yaml"), "--steps-per-epoch", "0"],
     "smallseg train: error: --steps-per-epoch 0: must be at least 1"),
    (["synth", "nuclei", "--out", "o", "--count", "0"], "smallseg synth: error: --count 0: must be at least 1"),
    (["synth", "recipe", "r.yaml", "--out", "o", "--limit", "0"], "smallseg synth: error: --limit 0: must be at least 1"),
    (["finetune", "a.tif", "--labels", "a.geojson", "--out", "m.safetensors", "--batch-size", "0"],
     "smallseg finetune: error: --batch-size 0: must be at least 1"),
])
def test_a_range_error_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, argv, line):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line]
    assert not (tmp_path / "o").exists()  # refused before anything is written


def _device_help(command: str) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    return next(a.help for a in sub._actions if "--device" in a.option_strings)


@pytest.mark.parametrize("command, default", [("tile-and-predict", "auto"), ("demo", "auto"),
                                              ("dicom-batch", "cpu"), ("finetune", "cpu")])
def test_device_is_explained_the_same_way_everywhere(command, default):
    assert _device_help(command) == f"{DEVICE_HELP} (default: {default})"
    assert _device_help("train") == f"{DEVICE_HELP}; overrides the config's device"
