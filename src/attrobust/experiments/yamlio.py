"""Configs as data: dataclasses <-> nested dicts <-> YAML, with strict checking and dotted overrides.

- ``from_dict(cls, d)`` builds a config dataclass from nested dicts and rejects unknown keys with a
  ``ValueError`` naming the key and the valid ones; values are checked against the annotations (``"1e-4"``,
  which YAML reads as a string, is accepted for a float field);
- ``to_dict(cfg)`` gives plain Python types, ``save_yaml``/``load_yaml`` write and read them
  (``yaml.safe_load`` only; a file may ``extends:`` others, see :func:`read_yaml`);
- ``merge(cfg, partial_mapping)`` and ``apply_overrides(cfg, ["optim.lr=1e-3", "model.kwargs={width: 8}"])``
  give changed copies (override values parsed by ``yaml.safe_load``).

Works on any dataclass: imports nothing of the package (the config classes live in :mod:`.config`).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from .._files import atomic_write_text

C = TypeVar("C")
# free-form mappings of a config (model kwargs, objective params): :func:`merge` replaces them whole
FREE_FORM_KEYS = ("kwargs", "params")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting where lossless) or raise ``ValueError``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        messages = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except ValueError as err:
                messages.append(str(err))
        raise ValueError(messages[0] if len(messages) == 1 else f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, path + ".")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): copy.deepcopy(v) for k, v in value.items()}
    raise ValueError(f"{path}: unsupported annotation {tp!r}")


def _from_dict(cls: type[C], data: dict[str, Any], prefix: str) -> C:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(
            f"unknown config key {prefix}{unknown[0]!s}; expected one of: "
            + ", ".join(prefix + name for name in fields)
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing config key {prefix}{missing[0]}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "") -> C:
    """Build the config dataclass ``cls`` from nested dicts; unknown keys and ill-typed values raise
    ``ValueError`` naming the dotted key (``prefix`` + key: the section's path when ``cls`` is a nested one)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}")
    return _from_dict(cls, data, prefix)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (only str, int, float, bool, None, list, dict) of a config dataclass."""
    return dataclasses.asdict(cfg)


def deep_merge(base: dict[str, Any], upd: dict[str, Any], whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """A new dict: ``base`` with ``upd`` merged in recursively (mappings merge key by key, except under the keys
    ``whole``, which are replaced whole like every other value; values of ``upd`` are copied)."""
    out = dict(base)
    for key, value in upd.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in whole:
            out[key] = deep_merge(out[key], value, whole)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge(cfg: C, data: dict[str, Any]) -> C:
    """A copy of ``cfg`` with the (possibly partial, nested) mapping ``data`` applied on top."""

    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping of config keys, got {type(data).__name__}")
    # nested config sections merge key by key; free-form ``kwargs``/``params`` mappings are replaced whole
    return from_dict(type(cfg), deep_merge(to_dict(cfg), data, whole=FREE_FORM_KEYS))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], yaml.safe_load("value"))``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override: expected KEY=VALUE with a dotted KEY (e.g. optim.lr=1e-3), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def apply_overrides(cfg: C, overrides: list[str] | tuple[str, ...]) -> C:
    """A copy of ``cfg`` with each ``"dotted.key=value"`` applied in order (values parsed by YAML).

    A class may name groups of top-level keys of which at most one is set (``EXCLUSIVE_KEYS``, e.g.
    ``(("epochs", "steps"),)``): overriding one of them with a value clears the others of its group that the
    overrides do not set themselves, so ``--set steps=100`` works on a config that sets ``epochs``."""
    data = to_dict(cfg)
    given = {parse_override(text)[0][0] for text in overrides}
    for group in getattr(type(cfg), "EXCLUSIVE_KEYS", ()):
        if any(key in given for key in group):
            data.update({key: None for key in group if key not in given})
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if not isinstance(child, dict):
                if key in node:
                    raise ValueError(f"override {text!r}: {'.'.join(keys[: depth + 1])} is not a mapping")
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
    return from_dict(type(cfg), data)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The top-level mapping of a YAML file (``yaml.safe_load``; an empty file is ``{}``).

    A file may start from other files: ``extends: base.yaml`` (or a list of files, applied in order; paths
    relative to the extending file) deep-merges the file's own keys over the bases', so a preset's ``_cpu``
    variant states only what it shrinks; a file that names another model drops the base's model ``kwargs``. A
    cycle of ``extends`` is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ValueError(f"{path}: expected no cycle of 'extends', got {chain}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: extends: expected a file name or a list of file names, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge_files(merged, read_yaml(path.parent / base, (*_seen, path.resolve())))
    return _merge_files(merged, data)


def _merge_files(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    """:func:`deep_merge` of an extending file's keys over its base's, except that a file naming another model
    than its base drops the base's ``kwargs`` that only the base's architecture takes (a ResNet's ``stem`` means
    nothing to a WRN, which would refuse it); options of every model (``smoothing``) and those both take stay."""
    old, new = base.get("model"), upd.get("model")
    if isinstance(old, dict) and isinstance(new, dict) and "name" in new and new["name"] != old.get("name"):
        from ..models import architecture_options

        kwargs = old.get("kwargs")
        if isinstance(kwargs, dict):
            only_old = architecture_options(old.get("name")) - architecture_options(new["name"])
            base = {**base, "model": {**old, "kwargs": {k: v for k, v in kwargs.items() if k not in only_old}}}
    return deep_merge(base, upd)


def load_yaml(cls: type[C], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> C:
    """Read a YAML config file into ``cls`` and apply ``overrides`` (dotted ``key=value`` strings)."""
    data = read_yaml(path)
    try:
        return apply_overrides(from_dict(cls, data), overrides)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def merge_yaml(cfg: C, path: str | Path) -> C:
    """A copy of ``cfg`` with the (partial) YAML file at ``path`` applied on top (see :func:`merge`)."""
    data = read_yaml(path)
    try:
        return merge(cfg, data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def save_yaml(cfg: Any, path: str | Path) -> Path:
    """Write ``to_dict(cfg)`` as YAML (keys in field order) and return the path."""
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
