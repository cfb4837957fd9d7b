"""Model loading by name or path, device choice and model identity: one implementation, one behaviour."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import smallseg.models as models_pkg
from smallseg.errors import SmallsegError
from smallseg.models import build_model, save_checkpoint
from smallseg.models.registry import (
    WEIGHTS_DIR,
    ModelSource,
    builtin_models,
    load_model,
    prepare_model,
    resolve_device,
    weights_fingerprint,
)

MODELS_DIR = Path(models_pkg.__file__).parent


def test_a_name_and_its_path_load_the_same_model_with_the_same_fingerprint():
    by_name, source = prepare_model("medical")
    by_path, path_source = prepare_model(WEIGHTS_DIR / "medical.safetensors")
    assert source == ModelSource("medical", True, (WEIGHTS_DIR / "medical.safetensors").resolve())
    assert path_source.name == "medical" and path_source.path == source.path
    assert not by_name.training and weights_fingerprint(by_name) == weights_fingerprint(by_path)
    assert weights_fingerprint(by_name) != weights_fingerprint(load_model("remote-sensing"))
    assert source.to_dict() == {"name": "medical", "builtin": True, "path": str(source.path)}


def test_a_user_checkpoint_is_named_by_its_stem(tmp_path):
    model = build_model("resnet18", classes=1, encoder_depth=3, encoder_output_stride=32)
    path = save_checkpoint(model, tmp_path / "my-model.safetensors")
    loaded, source = prepare_model(str(path))
    assert source == ModelSource("my-model", False, path.resolve())
    assert weights_fingerprint(loaded) == weights_fingerprint(model)


def test_an_unknown_model_is_one_line_in_python_terms():
    with pytest.raises(SmallsegError) as info:
        load_model("no-such-model")
    message = str(info.value)
    assert message.startswith("model 'no-such-model': no checkpoint file there") and "--" not in message
    assert all(name in message for name in builtin_models()) and "\n" not in message


def test_every_shipped_model_is_described_in_each_subcommands_help(capsys):
    from smallseg.cli import main
    from smallseg.shipped import BUILTIN_MODEL_SUMMARIES

    assert {"remote-sensing", "medical", "microscopy"} <= set(builtin_models())
    assert set(builtin_models()) <= set(BUILTIN_MODEL_SUMMARIES)  # a new weights file needs its line
    for command in ("tile-and-predict", "dicom-batch", "finetune", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for name, summary in BUILTIN_MODEL_SUMMARIES.items():
            assert f"{name} ({' '.join(summary.split())})" in text, (command, name)


def test_a_model_object_stays_where_it_is_unless_a_device_is_named():
    model = build_model("resnet18", classes=1, encoder_depth=3, encoder_output_stride=32).train()
    same, source = prepare_model(model, None)
    assert same is model and not same.training and source == ModelSource("SmallObjectNet")
    assert prepare_model(model, "cpu")[0].encoder.conv1.weight.device.type == "cpu"
    with pytest.raises(SmallsegError, match="not a smallseg model"):
        prepare_model(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(SmallsegError, match="expected a built-in name"):
        prepare_model(42)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(SmallsegError, match=r"device 'gpu0': use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")
    if torch.cuda.is_available():
        with pytest.raises(SmallsegError, match="only .* CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(SmallsegError, match=r"device 'cuda': CUDA is not available here"):
            resolve_device("cuda")


def _smallseg_imports(path: Path) -> tuple[set[str], list[str]]:
    """(smallseg.models modules imported anywhere in ``path``, function-level imports of smallseg modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, nested = set(), []
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smallseg"):
            if node.module.startswith("smallseg.models."):
                found.add(node.module.rsplit(".", 1)[1])
            if id(node) not in top:
                nested.append(f"{path.name}:{node.lineno} {node.module}")
    return found, nested


def test_model_modules_import_each_other_in_one_direction_only():
    graph, nested = {}, []
    for path in sorted(MODELS_DIR.glob("*.py")):
        if path.name != "__init__.py":
            graph[path.stem], inner = _smallseg_imports(path)
            nested += inner
    assert not nested, nested  # no function-level imports to hide a cycle

    def reaches(start: str, goal: str, seen=()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    cycles = [m for m in graph if reaches(m, m)]
    assert not cycles, {m: graph[m] for m in cycles}
    assert "checkpoint" not in graph["net"] and {"net", "state"} <= graph["checkpoint"]
