"""The project's own promises: CI runs the README's test command, the CLI answers --help/--version."""

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


def test_version_matches_package_metadata():
    out = subprocess.run([sys.executable, "-m", "smallseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"smallseg {smallseg.__version__}"
    from importlib.metadata import version

    assert version("smallseg") == smallseg.__version__
