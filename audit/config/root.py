"""The whole run config, :class:`AuditConfig`: its sections and the rules that span them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audit.config.checks import Checked, ConfigError, FieldRules, InstanceOf, plain
from audit.config.criticism import CriticismConfig
from audit.config.data import DataConfig, Layout
from audit.config.model import ModelConfig
from audit.config.output import OutputConfig
from audit.config.stages import AttackConfig, ExplainConfig, ExplainWhich, PredictConfig, Variant


@dataclass(frozen=True)
class AuditConfig(Checked):
    """A whole audit run: the sections, each checked when it was built, and the rules that span
    fields (:meth:`__post_init__`)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    criticism: CriticismConfig = field(default_factory=CriticismConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    plugins: Mapping[str, Any] = field(default_factory=dict)
    """The sections of plug-in stages (:mod:`audit.stages.registry`), by section name; each is
    that stage's ``config_type``. In YAML they are top-level sections like the others."""

    SECTION: ClassVar[str | None] = ""
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "data": InstanceOf(DataConfig, "a DataConfig"),
        "model": InstanceOf(ModelConfig, "a ModelConfig"),
        "predict": InstanceOf(PredictConfig, "a PredictConfig"),
        "attack": InstanceOf(AttackConfig, "an AttackConfig"),
        "explain": InstanceOf(ExplainConfig, "an ExplainConfig"),
        "criticism": InstanceOf(CriticismConfig, "a CriticismConfig"),
        "output": InstanceOf(OutputConfig, "an OutputConfig"),
        "plugins": InstanceOf(Mapping, "a mapping of plug-in stage sections"),
    }

    def __post_init__(self) -> None:
        """The sections' types, then every rule that spans fields or sections."""
        super().__post_init__()
        d, a, e = self.data, self.attack, self.explain
        if isinstance(d.source, tuple) and d.layout not in (Layout.UNLABELED, Layout.AUTO):
            raise ConfigError(
                "The 'data.source' field may be a list only with data.layout 'unlabeled'. "
                f"Got layout {d.layout.value!r} instead."
            )
        if d.layout is Layout.UNLABELED and (d.per_class or d.classes):
            raise ConfigError(
                "The 'data.per_class' and 'data.classes' fields need labels; "
                "data.layout 'unlabeled' has none."
            )
        if e.which is ExplainWhich.CLASSES and not e.classes:
            raise ConfigError(
                "The 'explain.classes' field must list class ids with explain.which 'classes'."
            )
        if e.enabled and not a.enabled and e.which is ExplainWhich.FLIPPED:
            raise ConfigError(
                "The 'explain.which' field is 'flipped' but attack.enabled is false: no image is "
                "attacked, so none would be explained; enable the attack or choose another set."
            )
        if e.enabled and not a.enabled and e.variants == (Variant.ADVERSARIAL,):
            raise ConfigError(
                "The 'explain.variants' field asks only for 'adversarial' explanations but "
                "attack.enabled is false: there would be none; enable the attack or add 'clean'."
            )

    def section(self, name: str) -> Any:
        """The section called ``name``: a field's, else a plug-in stage's, else None."""
        if name in SECTIONS:
            return getattr(self, name)
        return self.plugins.get(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as strings, storage options left out: they hold credentials);
        plug-in sections are top-level sections, after the others."""
        out: dict[str, Any] = {}
        sections = {name: getattr(self, name) for name in SECTIONS}
        for name, section in {**sections, **self.plugins}.items():
            out[name] = {
                sf.name: plain(getattr(section, sf.name))
                for sf in dataclasses.fields(section)
                if sf.name != "storage_options"
            }
        return out


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "predict": PredictConfig,
    "attack": AttackConfig,
    "explain": ExplainConfig,
    "criticism": CriticismConfig,
    "output": OutputConfig,
}
