"""Reading a config file into the one frozen :class:`~sip_bridge.settings.config.Config`.

This module owns the YAML, the conversion of each raw value to its key's type (an unknown or
removed key, or a value of the wrong type, is a :class:`ConfigError` naming the file and the
dotted key), the ``serve --workers N`` override, and :func:`load`, which hands the result to
:func:`~sip_bridge.settings.checks.validate`. It holds no default and no check of its own: the
defaults are the schema's (:mod:`sip_bridge.settings.config`), the checks are in ``checks``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from sip_bridge.settings.checks import validate
from sip_bridge.settings.config import AUTO, Config, ConfigError

T = TypeVar("T")

# Keys that existed once, and what replaced them: an old config fails with directions.
REMOVED_KEYS = {
    "delivery.webhook_retries": "removed: failed webhooks are now retried until "
    "delivery.webhook_horizon_s, then parked as dead letters",
    "delivery.webhook_queue": "removed: events are spooled on disk; "
    "delivery.webhook_spool_max bounds them per endpoint",
}


def load(path: str | Path | None, workers: int | None = None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults. ``workers``: overrides
    ``inference.workers`` (``serve --workers N``) before the "auto" keys are worked out."""
    if path is None:
        return validate(_with_workers(Config(), workers), "(defaults)")
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, "(file)", exc.strerror or str(exc)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "(file)", f"not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top)", "expected a mapping of keys")
    return validate(_with_workers(_build(Config, data, "", source), workers), source)


def _with_workers(cfg: Config, workers: int | None) -> Config:
    if workers is None:
        return cfg
    return dataclasses.replace(cfg, inference=dataclasses.replace(cfg.inference, workers=workers))


def _build(cls: type[T], data: dict[str, Any], prefix: str, source: str) -> T:
    """A section's dataclass from its mapping: keys not given keep the schema's default."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(source, where, REMOVED_KEYS.get(where, "unknown key"))
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            where = f"{prefix}.{f.name}" if prefix else f.name
            if f.metadata.get("auto"):
                kwargs[f.name] = _auto_int(data[f.name], where, source)
            else:
                kwargs[f.name] = _convert(data[f.name], hints[f.name], where, source)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field (e.g. webhook url) is missing
        raise ConfigError(source, prefix or "(top)", str(exc)) from exc


def _convert(value: Any, typ: Any, key: str, source: str) -> Any:
    origin = get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__}")
        return _build(typ, value, key, source)  # type: ignore[arg-type]
    if origin is tuple:
        return _convert_tuple(value, typ, key, source)
    if origin is Literal:
        choices = get_args(typ)
        if value not in choices:
            raise ConfigError(source, key, f"must be one of {', '.join(map(str, choices))}")
        return value
    if typ in (bool, int, float, str):
        return _convert_scalar(value, typ, key, source)
    if origin is types.UnionType:
        options = [a for a in get_args(typ) if a is not type(None)]
        if len(options) == 1 and len(get_args(typ)) == 2:  # X | None
            return None if value is None else _convert(value, options[0], key, source)
        raise ConfigError(source, key, "unsupported type")
    raise ConfigError(source, key, f"unsupported type {typ}")


def _convert_tuple(value: Any, typ: Any, key: str, source: str) -> tuple[Any, ...]:
    """A YAML list (or nothing) as the tuple of one item type the schema uses for lists."""
    (item,) = get_args(typ)[:1]
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(source, key, f"expected a list, got {type(value).__name__}")
    return tuple(_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value))


def _convert_scalar(value: Any, typ: type, key: str, source: str) -> Any:
    # YAML's true/false are Python bools, which are ints: never take one for a number.
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, "expected true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(source, key, f"expected a string, got {value!r}")
    return value


def _auto_int(value: Any, key: str, source: str) -> int:
    """A key that takes a count or "auto" (read as :data:`AUTO` until validate works it out)."""
    if value == "auto":
        return AUTO
    number: int = _convert(value, int, key, source)
    if number < 0:
        raise ConfigError(source, key, "must be 0 or more, or auto")
    return number
