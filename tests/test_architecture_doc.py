"""docs/ARCHITECTURE.md names only files and functions that exist, and the README links it: a renamed or removed
module makes this fail instead of leaving the map wrong."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def _code_spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", DOC.read_text(encoding="utf-8"))


def _module_paths() -> set[str]:
    """Every ``something.py`` or ``package/`` path the page names inside a code span."""
    paths = set()
    for span in _code_spans():
        for token in re.split(r"[\s:,()]+", span):
            if re.fullmatch(r"[a-z_][a-z0-9_/]*\.py|[a-z_][a-z0-9_/]*/", token):
                paths.add(token)
    return paths


def _exists(token: str) -> bool:
    """``io/tables/`` or ``pipeline/geotiff/run.py`` (relative to smallseg/) or ``smallseg/...``; a bare file
    name such as ``grid.py`` may sit in any package."""
    for base in (ROOT, ROOT / "smallseg"):
        if (base / token).exists():
            return True
    return "/" not in token.rstrip("/") and any((ROOT / "smallseg").rglob(token))


def test_every_module_path_on_the_page_exists():
    paths = _module_paths()
    assert len(paths) > 30  # the page really names the modules (the parser found them)
    missing = sorted(p for p in paths if not _exists(p))
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_function_or_class_it_names_in_a_module_exists():
    # `module.py: name` spans: the name must be defined in that module (def, class or assignment).
    checked = 0
    for span in _code_spans():
        match = re.fullmatch(r"([a-z_][a-z0-9_/]*\.py): ([A-Za-z_][A-Za-z0-9_]*)", span)
        if not match:
            continue
        module, name = match.groups()
        candidates = [ROOT / "smallseg" / module] if "/" in module else list((ROOT / "smallseg").rglob(module))
        text = "\n".join(p.read_text(encoding="utf-8") for p in candidates if p.exists())
        assert re.search(rf"^\s*(def|class) {name}\b|^{name}\s*=", text, re.M), f"{module}: no {name}"
        checked += 1
    assert checked >= 5


def test_the_readme_links_the_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/ARCHITECTURE.md)" in readme
