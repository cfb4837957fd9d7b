"""The project's own promises: CI runs the README's test command in a fresh clone, the tests read nothing outside
the repository, the CLI answers --help/--version."""

from pathlib import Path
import subprocess
import sys

import smallseg

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    readme_lines = [l.strip() for l in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]
    test_cmd = next(l for l in ci_lines if "pytest" in l)
    assert test_cmd in readme_lines


def test_ci_runs_the_tests_in_a_fresh_clone_with_nothing_beside_it():
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    step = {key: next(i for i, l in enumerate(lines) if l.startswith(key)) for key in (
        'tmp="$(mktemp -d)"', "trap 'rm -rf \"$tmp\"' EXIT", "git clone", 'cd "$tmp/smallseg"', "python3 -m venv")}
    assert list(step.values()) == sorted(step.values())  # the test command runs in the clone, after it is made
    assert "export NO_ALBUMENTATIONS_UPDATE=1" in lines


def test_tests_read_no_file_from_outside_the_repository():
    # Real test files live in tests/data (see its ORIGIN.md); the team's shared data folder exists only beside this
    # project's checkout. The needles are built from parts so that this file itself names no outside path.
    offenders = []
    for path in sorted(set((ROOT / "tests").rglob("*.py")) - {Path(__file__).resolve()}):  # this file names them
        text = path.read_text(encoding="utf-8")
        shared = "sha" + "red"
        for needle in ("parents[2]", f'"{shared}"', f"../{shared}", "/wo" + "rk/"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


def test_version_matches_package_metadata():
    out = subprocess.run([sys.executable, "-m", "smallseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"smallseg {smallseg.__version__}"
    from importlib.metadata import version

    assert version("smallseg") == smallseg.__version__


def test_every_subcommand_option_has_help_text():
    import argparse

    from smallseg.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"demo", "tile-and-predict", "dicom-batch", "evaluate", "synth", "train", "tune-decode"} <= set(sub.choices)
    missing = []

    def check(name, subparser):
        assert subparser.description or subparser.format_help(), f"{name} has no description"
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):  # e.g. `synth remote-sensing`
                for child, child_parser in action.choices.items():
                    check(f"{name} {child}", child_parser)
                continue
            if not (action.help and action.help.strip()):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    for name, subparser in sub.choices.items():
        assert subparser.description, f"{name} has no description"
        check(name, subparser)
    assert not missing, f"options without help: {missing}"
