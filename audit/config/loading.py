"""Building an :class:`~audit.config.root.AuditConfig` from YAML plus ``section.field=value``
overrides, and the command line's JSON storage options."""

from __future__ import annotations

import dataclasses
import datetime
import json
import types
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from audit.config.checks import ConfigError, Options, config_error
from audit.config.model import factory_label
from audit.config.root import SECTIONS, AuditConfig


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return str(Options(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if origin is not None and origin.__name__ == "Mapping":
        return "a mapping"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Convert a YAML value to the annotated type or raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise config_error(
                path, value, "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp))
            )
        return _build_section(path, tp, value)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(path, value, arg)
            except ConfigError:
                continue
        raise config_error(path, value, _describe(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise config_error(path, value, _describe(tp)) from None
    if origin is tuple:
        item = get_args(tp)[0]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise config_error(path, value, _describe(tp))
        return tuple(_coerce(path, v, item) for v in value)
    if origin is not None and origin.__name__ == "Mapping":
        if not isinstance(value, Mapping):
            raise config_error(path, value, "a mapping")
        return dict(value)
    return _coerce_scalar(path, value, tp)


def _coerce_scalar(path: str, value: Any, tp: Any) -> Any:
    """:func:`_coerce` for a ``bool``, ``int``, ``float`` or ``str`` field."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise config_error(path, value, "a bool (true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise config_error(path, value, "an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise config_error(path, value, "a float")
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML reads an unquoted 2024-01-01 as a date and 20240101 as an int; both spell the
        # string back exactly (a float such as 1.10 would not, so it stays an error)
        if type(value) is datetime.date:
            return value.isoformat()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise config_error(path, value, "a string")
    raise TypeError(f"unsupported config type {tp!r} for {path}")  # pragma: no cover


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(
                f"Unknown field '{name}.{key}'. Allowed fields of '{name}': {', '.join(allowed)}."
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def validate(cfg: AuditConfig) -> AuditConfig:
    """``cfg`` unchanged: kept for callers, since every config is checked when it is built."""
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.field=value`` (value is YAML: ``10``, ``true``, ``[a, b]``, ``null``).

    A nested field is ``section.field.sub=value`` (``model.preprocess.crop=299``); its key is
    returned as ``field.sub``.
    """
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"An override must look like 'section.field=value' (e.g. data.limit=100). Got {text!r} instead."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts[0], ".".join(parts[1:]), value


def build_config(
    raw: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()
) -> AuditConfig:
    """Build and validate an :class:`AuditConfig` from a mapping plus overrides.

    Raises:
        ConfigError: an unknown section or field, or a value of the wrong type or range.
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    plugins: dict[str, type] = {}
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"A config file must hold a mapping of sections. Got {type(raw).__name__}."
        )
    for section, values in raw.items():
        if section not in merged:
            _add_plugin(section, merged, plugins, "")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"The '{section}' section must be a mapping. Got {values!r} instead.")
        merged[section].update(values)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in merged:
            _add_plugin(section, merged, plugins, f" in override {text!r}")
        field_name, _, sub = key.partition(".")
        if sub:
            inner = merged[section].get(field_name) or {}
            if not isinstance(inner, Mapping):
                raise ConfigError(
                    f"The '{section}.{field_name}' field must be a mapping to take {text!r}."
                )
            merged[section][field_name] = {**inner, sub: value}
        else:
            merged[section][key] = value
    factory = merged["model"].get("factory")
    if isinstance(factory, str) and factory.strip() and "name" not in merged["model"]:
        merged["model"]["name"] = factory_label(factory)
    sections = {name: _build_section(name, cls, merged[name]) for name, cls in SECTIONS.items()}
    extra = {name: _build_section(name, cls, merged[name]) for name, cls in plugins.items()}
    return AuditConfig(**sections, plugins=extra)


def _add_plugin(
    section: str, merged: dict[str, dict[str, Any]], plugins: dict[str, type], where: str
) -> None:
    """Make room for the section of a plug-in stage (:mod:`audit.stages.registry`), looked up
    only for a section that is not one of :data:`SECTIONS`, so that a config of the shipped
    sections never imports the stages.

    Raises:
        ConfigError: no registered stage reads ``section``; the message lists every section.
    """
    from audit.stages.registry import STAGES

    stage = STAGES.by_section(section)
    if stage is None:
        allowed = [*SECTIONS, *(c.section for c in STAGES.classes() if c.section not in SECTIONS)]
        raise ConfigError(
            f"Unknown config section '{section}'{where}. Allowed sections: {', '.join(allowed)}."
        )
    merged[section] = {}
    plugins[section] = stage.config_type


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> AuditConfig:
    """Load a YAML config file (or the defaults, which run the demo) and apply overrides."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file {str(p)!r} does not exist.")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
            raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {first}") from None
    return build_config(raw, overrides)


def parse_storage_options(text: str | None, flag: str = "--storage-options") -> dict[str, Any]:
    """A command-line JSON object of fsspec options (``'{"anon": true}'``); ``{}`` when empty.

    Raises:
        ConfigError: the text is not a JSON object; the message names ``flag``.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} must be a JSON object: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object. Got {type(value).__name__} instead.")
    return value
