from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from audit.config import (
    SECTIONS,
    AttackConfig,
    AuditConfig,
    ConfigError,
    CriticismConfig,
    DataConfig,
    Device,
    ExplainConfig,
    ExplainWhich,
    Interpolation,
    Interval,
    Items,
    Layout,
    ModelConfig,
    Options,
    OutputConfig,
    PredictConfig,
    PreprocessConfig,
    Text,
    Variant,
    build_config,
    check,
    load_config,
    parse_override,
    validate,
)
from audit.human.config import AgreementRule, ExportConfig, Study, TimeFilter
from audit.report.config import ReportConfig


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


# ------------------------------------------------------------------ configs built in code


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: DataConfig(source=""), "data.source"),
        (lambda: DataConfig(source=()), "data.source"),
        (lambda: DataConfig(layout="zip"), "data.layout"),
        (lambda: DataConfig(limit=0), "data.limit"),
        (lambda: DataConfig(classes=("n0 1",)), "data.classes"),
        (lambda: DataConfig(max_pixels=0), "data.max_pixels"),
        (lambda: DataConfig(jpeg_draft="yes"), "data.jpeg_draft"),
        (lambda: ModelConfig(name=" "), "model.name"),
        (lambda: ModelConfig(seed=-1), "model.seed"),
        (lambda: ModelConfig(factory="no-colon"), "model.factory"),
        (lambda: ModelConfig(preprocess={"crop": 224}), "model.preprocess"),
        (lambda: PreprocessConfig(resize=0), "model.preprocess.resize"),
        (lambda: PreprocessConfig(crop=(1, 2, 3)), "model.preprocess.crop"),
        (lambda: PreprocessConfig(interpolation="cubic"), "model.preprocess.interpolation"),
        (lambda: PreprocessConfig(std=(1.0, 0.0, 1.0)), "model.preprocess.std"),
        (lambda: PredictConfig(batch_size=0), "predict.batch_size"),
        (lambda: PredictConfig(batch_size="8"), "predict.batch_size"),
        (lambda: PredictConfig(device="tpu"), "predict.device"),
        (lambda: PredictConfig(num_actors=0), "predict.num_actors"),
        (lambda: AttackConfig(eps_step=0.0), "attack.eps_step"),
        (lambda: AttackConfig(max_steps=10_001), "attack.max_steps"),
        (lambda: AttackConfig(norm="l1"), "attack.norm"),
        (lambda: ExplainConfig(n_samples=1), "explain.n_samples"),
        (lambda: ExplainConfig(kernel_width=float("inf")), "explain.kernel_width"),
        (lambda: ExplainConfig(variants=("clean", "noisy")), "explain.variants"),
        (lambda: ExplainConfig(seed=-1), "explain.seed"),
        (lambda: CriticismConfig(methods=("magic",)), "criticism.methods"),
        (lambda: CriticismConfig(proto_threshold=1.5), "criticism.proto_threshold"),
        (lambda: CriticismConfig(mmd_gamma=float("nan")), "criticism.mmd_gamma"),
        (lambda: CriticismConfig(sieve_eps=1.0), "criticism.sieve_eps"),
        (lambda: OutputConfig(root=""), "output.root"),
        (lambda: OutputConfig(run_id="../etc"), "output.run_id"),
        (lambda: OutputConfig(shard_size=0), "output.shard_size"),
        (lambda: AuditConfig(predict={"batch_size": 8}), "predict"),
    ],
)
def test_a_config_built_in_code_is_checked(build: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    msg = str(info.value)
    assert msg.startswith(f"The '{field}' field must be ")
    assert "\n" not in msg


def test_code_and_yaml_give_the_same_message() -> None:
    message = "The 'predict.batch_size' field must be an int >= 1. Got 0 instead."
    with pytest.raises(ConfigError) as code:
        AuditConfig(predict=PredictConfig(batch_size=0))
    with pytest.raises(ConfigError) as yaml:
        build_config({}, ["predict.batch_size=0"])
    assert str(code.value) == str(yaml.value) == message
    with pytest.raises(ConfigError) as nested:
        ModelConfig(preprocess=PreprocessConfig(std=(1, 0, 1)))
    assert str(nested.value) == (
        "The 'model.preprocess.std' field must be 3 finite floats > 0. Got [1, 0, 1] instead."
    )
    with pytest.raises(ConfigError) as typed:
        PredictConfig(batch_size="8")  # type: ignore[arg-type]
    assert str(typed.value) == (
        "The 'predict.batch_size' field must be an int >= 1. Got '8' instead."
    )


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: AuditConfig(data=DataConfig(source=("/a.jpg",), layout=Layout.DEVKIT)),
            r"list only with data\.layout 'unlabeled'",
        ),
        (
            lambda: AuditConfig(data=DataConfig(source="/x", layout="unlabeled", per_class=2)),
            "need labels",
        ),
        (
            lambda: AuditConfig(explain=ExplainConfig(which=ExplainWhich.CLASSES)),
            r"'explain\.classes' field must list class ids with explain\.which 'classes'",
        ),
        (
            lambda: AuditConfig(
                attack=AttackConfig(enabled=False), explain=ExplainConfig(which="flipped")
            ),
            r"'explain\.which' field is 'flipped' but attack\.enabled is false",
        ),
        (
            lambda: AuditConfig(
                attack=AttackConfig(enabled=False),
                explain=ExplainConfig(variants=(Variant.ADVERSARIAL,)),
            ),
            r"'explain\.variants' field asks only for 'adversarial'",
        ),
        (
            # replace() builds a new config: the rules run again
            lambda: dataclasses.replace(
                AuditConfig(explain=ExplainConfig(which=ExplainWhich.FLIPPED)),
                attack=AttackConfig(enabled=False),
            ),
            r"'explain\.which' field is 'flipped'",
        ),
    ],
)
def test_cross_field_rules_hold_in_code(build: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


def test_validate_is_a_no_op_on_a_built_config() -> None:
    cfg = AuditConfig()
    assert validate(cfg) is cfg


def test_code_built_values_are_normalised() -> None:
    assert PredictConfig(device="cpu").device is Device.CPU  # type: ignore[arg-type]
    p = PreprocessConfig(interpolation="bicubic", mean=(0, 1, 1))  # type: ignore[arg-type]
    assert p.interpolation is Interpolation.BICUBIC and p.mean == (0.0, 1.0, 1.0)
    d = DataConfig(source=["/a.jpg", "/b.jpg"], layout="unlabeled")  # type: ignore[arg-type]
    assert d.source == ("/a.jpg", "/b.jpg") and d.layout is Layout.UNLABELED
    assert ExplainConfig(variants=["clean"]).variants == (Variant.CLEAN,)  # type: ignore[arg-type]
    assert AttackConfig(eps_step=1).eps_step == 1.0


def test_every_field_has_rules() -> None:
    classes = [*SECTIONS.values(), PreprocessConfig, AuditConfig]
    classes += [ReportConfig, ExportConfig, TimeFilter, AgreementRule]
    for cls in classes:
        assert set(cls.RULES) == {f.name for f in dataclasses.fields(cls)}, cls.__name__


def test_interpolation_choices_match_the_transform() -> None:
    from audit.models.transform import INTERPOLATIONS

    assert [i.value for i in Interpolation] == list(INTERPOLATIONS)
    with pytest.raises(ConfigError, match="one of 'nearest', 'bilinear'"):
        build_config({}, ["model.preprocess.interpolation=cubic"])


@pytest.mark.parametrize(
    ("rules", "value", "allowed"),
    [
        ((Interval(int, 1, None),), 0, "an int >= 1"),
        ((Interval(int, 1, None),), True, "an int >= 1"),
        ((Interval(int, 1, 10_000),), 10_001, "an int in [1, 10000]"),
        ((Interval(float, 0, 1, closed="right"),), 0.0, "a float in (0, 1]"),
        ((Interval(float, 0, 1, closed="neither"),), 1.0, "a float in (0, 1)"),
        ((Interval(float, 0, None, closed="neither"),), float("inf"), "a float > 0"),
        ((Interval(float, None, 1, closed="neither"),), 1.0, "a float < 1"),
        ((Interval(float, None, None),), float("nan"), "a finite float"),
        (
            (Options(Layout),),
            "zip",
            "one of 'auto', 'imagefolder', 'kaggle', 'devkit', 'unlabeled', 'demo'",
        ),
        ((Options(("a", "b")),), "c", "one of 'a', 'b'"),
        ((Text(),), " ", "a non-empty string"),
        ((Text("a name", r"[a-z]+"),), "a\nb", "a name"),
        ((Items(Interval(int, 1, None), min_len=1),), [], "a list of an int >= 1"),
        ((Items(Options(("a",)), "distinct names", unique=True),), ["a", "a"], "distinct names"),
        # the rules about the value's kind are told; a value of no kind is told all of them
        ((Interval(int, 1, None), Items(Interval(int, 1, None), "[h, w]"), None), 0, "an int >= 1"),
        ((Interval(int, 1, None), None), "x", "an int >= 1 or null"),
    ],
)
def test_check_writes_the_one_message(rules: tuple[Any, ...], value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        check("sec.field", value, *rules)
    assert str(info.value) == f"The 'sec.field' field must be {allowed}. Got {value!r} instead."
    with pytest.raises(ConfigError) as info:
        check("field", value, *rules, owner="Thing")
    assert str(info.value).startswith(f"The 'field' parameter of Thing must be {allowed}. Got ")


def test_check_returns_the_normalised_value_and_keeps_messages_on_one_line() -> None:
    assert check("f", None, Interval(int, 1, None), None) is None
    assert check("f", "kaggle", Options(Layout)) is Layout.KAGGLE
    assert check("f", [1, 2], Items(Interval(float, 0, None))) == (1.0, 2.0)

    class Loud:
        def __repr__(self) -> str:
            return "two\nlines"

    with pytest.raises(ConfigError) as info:
        check("f", Loud(), Text())
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        DataConfig(storage_options=[("key", "s3cr3t")])  # type: ignore[arg-type]
    assert "'data.storage_options' field must be a mapping" in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ReportConfig(thumb_size=8),
            "The 'thumb_size' parameter of ReportConfig must be an int >= 16. Got 8 instead.",
        ),
        (
            lambda: ReportConfig(seed=1.5),
            "The 'seed' parameter of ReportConfig must be an int. Got 1.5 instead.",
        ),
        (
            lambda: ExportConfig(study=Study.MISCLASSIFIED, raters_per_item=0),
            "The 'raters_per_item' parameter of ExportConfig must be an int >= 1. Got 0 instead.",
        ),
        (
            lambda: ExportConfig(study="survey"),
            "The 'study' parameter of ExportConfig must be one of 'misclassified', "
            "'adversarial', 'assignment'. Got 'survey' instead.",
        ),
        (
            lambda: TimeFilter(min_seconds=-1),
            "The 'min_seconds' parameter of TimeFilter must be a float >= 0. Got -1 instead.",
        ),
        (
            lambda: AgreementRule(k=6, n=5),
            "The 'k' parameter of AgreementRule must be an int in [1, 5]. Got 6 instead.",
        ),
    ],
)
def test_report_and_human_configs_use_the_same_message(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value) == message
