"""Usage errors of the command line are one line like every other error (#11), not argparse's usage block."""

from __future__ import annotations

import pytest

from smallseg.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["tile-and-predict", "a.tif", "--out", "o", "--nodata", "abc"], "argument --nodata: invalid float value: 'abc'"),
    (["tile-and-predict", "a.tif", "--out", "o", "--tiles", "64"], "unrecognized arguments: --tiles 64"),
    (["dicom-batch"], "the following arguments are required: ROOT, --out"),
    (["train", "c.yaml", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_a_usage_error_is_one_line_with_exit_code_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("smallseg") and ": error: " in lines[0] and needle in lines[0]
    assert "--help" in lines[0] and "usage:" not in captured.err and captured.out == ""
