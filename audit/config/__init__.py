"""Run configuration: frozen dataclasses loaded from YAML plus ``section.field=value`` overrides.

Every config dataclass checks its own fields when it is built (``__post_init__``), whether it
comes from :func:`load_config` / :func:`build_config` or from code, and :class:`AuditConfig`
checks the rules that span sections. A bad value raises :class:`ConfigError` whose message is
one line naming the field, the value and what is allowed, e.g.::

    The 'predict.batch_size' field must be an int >= 1. Got 0 instead.

The modules, in the order a config is checked and built:

- :mod:`~audit.config.checks`: the rules (:class:`Interval`, :class:`Options`, :class:`Text`,
  :class:`Items`, ``InstanceOf``), the one message, and :class:`Checked`, the base class;
- :mod:`~audit.config.data`, :mod:`~audit.config.model`, :mod:`~audit.config.stages`
  (predict, attack, explain), :mod:`~audit.config.criticism`, :mod:`~audit.config.output`:
  one section each;
- :mod:`~audit.config.root`: :class:`AuditConfig` and the rules that span sections;
- :mod:`~audit.config.loading`: YAML, overrides and :func:`build_config`.
"""

from audit.config.checks import (
    BOOL,
    NON_NEGATIVE,
    POSITIVE,
    STRING,
    Checked,
    ConfigError,
    FieldRules,
    Interval,
    Items,
    Options,
    Text,
    check,
)
from audit.config.criticism import CriticismConfig
from audit.config.data import DEFAULT_MAX_PIXELS, DataConfig, Layout
from audit.config.loading import (
    build_config,
    load_config,
    parse_override,
    parse_storage_options,
    validate,
)
from audit.config.model import Interpolation, ModelConfig, PreprocessConfig
from audit.config.output import OutputConfig
from audit.config.root import SECTIONS, AuditConfig
from audit.config.stages import (
    AttackConfig,
    AttackTarget,
    Device,
    ExplainConfig,
    ExplainWhich,
    PredictConfig,
    Variant,
)

__all__ = [
    "BOOL",
    "DEFAULT_MAX_PIXELS",
    "NON_NEGATIVE",
    "POSITIVE",
    "SECTIONS",
    "STRING",
    "AttackConfig",
    "AttackTarget",
    "AuditConfig",
    "Checked",
    "ConfigError",
    "CriticismConfig",
    "DataConfig",
    "Device",
    "ExplainConfig",
    "ExplainWhich",
    "FieldRules",
    "Interpolation",
    "Interval",
    "Items",
    "Layout",
    "ModelConfig",
    "Options",
    "OutputConfig",
    "PredictConfig",
    "PreprocessConfig",
    "Text",
    "Variant",
    "build_config",
    "check",
    "load_config",
    "parse_override",
    "parse_storage_options",
    "validate",
]
