from __future__ import annotations

from pathlib import Path

import pytest

from audit.config import (
    AuditConfig,
    ConfigError,
    Device,
    Layout,
    build_config,
    load_config,
    parse_override,
)


def test_defaults_run_the_demo() -> None:
    cfg = load_config()
    assert cfg.data.is_demo
    assert cfg.model.name == "demo_digits"
    assert cfg.output.root == "./audit-output"


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "data:\n  source: /data/val\n  layout: devkit\n  classes: [n01440764]\n"
        "model:\n  name: resnet18\npredict:\n  batch_size: 8\n  device: cpu\n"
    )
    cfg = load_config(p, ["data.limit=10", "predict.batch_size=16", "output.run_id=abc"])
    assert cfg.data.source == "/data/val"
    assert cfg.data.layout is Layout.DEVKIT
    assert cfg.data.classes == ("n01440764",)
    assert cfg.data.limit == 10
    assert cfg.predict.batch_size == 16  # override wins over the file
    assert cfg.predict.device is Device.CPU
    assert cfg.output.run_id == "abc"


def test_configs_in_repo_load() -> None:
    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        assert isinstance(load_config(path), AuditConfig)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["predict.batch_size=0"], "predict.batch_size"),
        (["predict.batch_size=abc"], "predict.batch_size"),
        (["predict.batch_size=true"], "predict.batch_size"),
        (["data.layout=zip"], "data.layout"),
        (["data.limit=-3"], "data.limit"),
        (["data.classes=n01440764"], "data.classes"),
        (["predict.device=tpu"], "predict.device"),
        (["predict.bf16=maybe"], "predict.bf16"),
        (["output.run_id=../etc"], "output.run_id"),
        (["output.shard_size=0"], "output.shard_size"),
        (["attack.eps_step=2.0"], "attack.eps_step"),
        (["attack.eps_step=0"], "attack.eps_step"),
        (["attack.max_steps=0"], "attack.max_steps"),
        (["attack.norm=l1"], "attack.norm"),
        (["attack.target=other"], "attack.target"),
        (["explain.fill=grey"], "explain.fill"),
        (["explain.segmentation=felzenszwalb"], "explain.segmentation"),
        (["explain.regressor=lasso"], "explain.regressor"),
        (["explain.n_samples=1"], "explain.n_samples"),
        (["explain.which=classes"], "explain.classes"),
        (["explain.classes=['n0 1']"], "explain.classes"),
        (["explain.seed=-1"], "explain.seed"),
        (["attack.enabled=false", "explain.which=flipped"], "explain.which"),
        (["attack.enabled=false", "explain.variants=[adversarial]"], "explain.variants"),
        (["criticism.seed=-3"], "criticism.seed"),
        (["model.seed=-1"], "model.seed"),
        (["criticism.mmd_gamma=.nan"], "criticism.mmd_gamma"),
        (["criticism.mmd_lambda=.nan"], "criticism.mmd_lambda"),
        (["explain.kernel_width=.inf"], "explain.kernel_width"),
        (["criticism.methods=[adversarial, magic]"], "criticism.methods"),
        (["data.nope=1"], "data.nope"),
        (["model.weights="], "model.weights"),
    ],
)
def test_bad_values_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, overrides)
    msg = str(info.value)
    assert field in msg
    assert "\n" not in msg


def test_message_says_value_and_allowed() -> None:
    with pytest.raises(
        ConfigError, match=r"'predict.batch_size' field must be an int >= 1\. Got 0"
    ):
        build_config({}, ["predict.batch_size=0"])
    with pytest.raises(ConfigError, match="one of 'auto', 'imagefolder'"):
        build_config({}, ["data.layout=zip"])


def test_unknown_section_and_bad_override() -> None:
    with pytest.raises(ConfigError, match="Unknown config section 'nonsense'"):
        build_config({"nonsense": {"eps": 1}})
    with pytest.raises(ConfigError, match=r"Unknown field 'attack\.eps'"):
        build_config({"attack": {"eps": 1}})
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        parse_override("limit=3")


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="need labels"):
        build_config({"data": {"source": "/x", "layout": "unlabeled", "per_class": 2}})
    with pytest.raises(ConfigError, match=r"list only with data\.layout 'unlabeled'"):
        build_config({"data": {"source": ["/a.jpg"], "layout": "devkit"}})


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_frozen_and_to_dict_hides_credentials() -> None:
    cfg = build_config({"data": {"storage_options": {"secret": "s3cr3t"}}})
    with pytest.raises(AttributeError):
        cfg.data.limit = 3  # type: ignore[misc]
    d = cfg.to_dict()
    assert "s3cr3t" not in repr(d)
    assert d["data"]["layout"] == "auto"


def test_string_fields_take_unquoted_dates_and_digits() -> None:
    # YAML reads 2024-01-01 as a date and 20240101 as an int: a string field gets the text back
    assert build_config({}, ["output.run_id=2024-01-01"]).output.run_id == "2024-01-01"
    assert build_config({"output": {"run_id": 20240101}}).output.run_id == "20240101"
    with pytest.raises(ConfigError, match=r"'output.run_id' field must be a str or null"):
        build_config({}, ["output.run_id=1.10"])  # a float does not spell its text back


def test_storage_options_are_never_echoed_in_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, ['output.storage_options={"secret": "s3cr3t"'])  # not a mapping
    assert "output.storage_options" in str(info.value) and "s3cr3t" not in str(info.value)
