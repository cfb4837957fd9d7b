"""Training configs with ``base:``: the base is read first and this file's keys laid over it; every shipped config
in configs/ loads and validates."""

from pathlib import Path

import pytest

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.models.validate import check_encoder_name
from smallseg.train.config_file import merge_config, read_config_file
from smallseg.train.loop import load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mappings_merge_at_every_depth_and_other_values_replace_whole():
    base = {"a": {"b": {"c": 1, "d": 2}, "e": [1, 2]}, "f": 1, "g": {"h": 1}}
    override = {"a": {"b": {"d": 3}, "e": [9]}, "g": None, "i": {"j": 1}}
    merged = merge_config(base, override)
    assert merged == {"a": {"b": {"c": 1, "d": 3}, "e": [9]}, "f": 1, "g": None, "i": {"j": 1}}
    merged["a"]["b"]["c"] = 5
    merged["i"]["j"] = 5
    assert base["a"]["b"]["c"] == 1 and override["i"]["j"] == 1  # the inputs share no mapping with the result


def test_a_chain_of_bases_is_merged_in_order(tmp_path):
    _write(tmp_path / "one.yaml", "name: one\nmodel: {classes: 2, encoder_name: resnet18}\n"
                                  "data: {train: [{synthetic: nuclei, count: 2}], val: [{synthetic: nuclei}]}\n"
                                  "optim: {epochs: 3, lr: 0.01}\nseed: 1\n")
    _write(tmp_path / "two.yaml", "base: one.yaml\noptim: {epochs: 5}\ndata: {train: [{synthetic: ct, count: 1}]}\n")
    three = _write(tmp_path / "sub" / "three.yaml", "base: ../two.yaml\nseed: 3\ninit: weights.safetensors\n")
    raw = read_config_file(three)
    assert raw == {"name": "one", "model": {"classes": 2, "encoder_name": "resnet18"},
                   "data": {"train": [{"synthetic": "ct", "count": 1}], "val": [{"synthetic": "nuclei"}]},
                   "optim": {"epochs": 5, "lr": 0.01}, "seed": 3, "init": "weights.safetensors"}
    config = load_train_config(three)
    assert config.optim.epochs == 5 and config.optim.lr == 0.01 and config.seed == 3
    # Relative paths belong to the file that is loaded.
    assert config.init == (tmp_path / "sub" / "weights.safetensors").resolve()
    assert config.source_dir == (tmp_path / "sub").resolve()


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "base: missing.yaml\nseed: 1\n"}, "a.yaml: base: missing.yaml not found"),
    ({"a.yaml": "base: a.yaml\n"}, "leads back to itself"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "leads back to itself"),
    ({"a.yaml": "base: [b.yaml]\n"}, "base: must name a YAML file"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "- not\n- a mapping\n"}, "b.yaml: expected a mapping"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "schedule: {epochs: 1}\n"}, "b.yaml: unknown section(s) ['schedule']"),
])
def test_bad_bases_give_one_line_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(SmallsegError) as err:
        load_train_config(tmp_path / "a.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_cycle_exits_2_with_one_line_from_the_cli(tmp_path, capsys):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert main(["train", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leads back to itself" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_train_config(path)
    name = config.model["encoder_name"]
    # Every shipped encoder is one the checkpoint allow-list accepts (smp / timm registries, no hub or path prefix).
    assert check_encoder_name("encoder_name", name) == name and name.startswith("tu-mobilenetv")
    assert config.data["train"] and config.data["val"]
    assert config.optim.epochs > 0 and config.optim.steps_per_epoch > 0


def test_stage_configs_are_named_after_their_stage_and_build_on_the_one_before():
    for family, last in (("medical", 5), ("remote-sensing", 4)):
        first = (CONFIGS / f"{family}.yaml").read_text(encoding="utf-8")
        assert "\nbase:" not in first and "stage 1" in first
        for stage in range(2, last + 1):
            path = CONFIGS / f"{family}-stage{stage}.yaml"
            text = path.read_text(encoding="utf-8")
            assert f"Stage {stage} " in text.splitlines()[0]
            previous = f"{family}.yaml" if stage == 2 else f"{family}-stage{stage - 1}.yaml"
            assert f"\nbase: {previous}\n" in text
        assert not (CONFIGS / f"{family}-stage{last + 1}.yaml").exists()


def test_a_2p5d_model_and_its_ct_slices_must_hold_the_same_neighbours(tmp_path):
    common = "name: c\nmodel: {encoder_name: resnet18, classes: 1%s}\ndata: {train: [{synthetic: ct, count: 1%s}]}\n"
    ok = _write(tmp_path / "ok.yaml", common % (", slice_context: 2", ", options: {slice_context: 2}"))
    assert load_train_config(ok).model["slice_context"] == 2
    for name, model, data in (("a", ", slice_context: 2", ""), ("b", "", ", options: {slice_context: 1}")):
        with pytest.raises(SmallsegError, match=r"data.train\[0\]: options.slice_context \d but model.slice_context"):
            load_train_config(_write(tmp_path / f"{name}.yaml", common % (model, data)))
