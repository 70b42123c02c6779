"""One config mechanism: dataclasses whose fields carry their help, validated in ``__post_init__``, built
from dicts that may not hold unknown keys, and turned into command-line flags by one helper.

    @dataclass
    class MyConfig:
        lr: float = option(1e-4, "learning rate")
        layers: int = option(4, "equivariant blocks", type=positive_int)

    add_config_arguments(parser, MyConfig)       # --lr, --layers, each with its help and default
    config = resolve(MyConfig, args)              # defaults, a preset, --config FILE, the flags, --set

:func:`resolve` is the one place where a command's settings meet.
"""

from __future__ import annotations

import argparse
import json
import math
import typing
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "add_config_arguments",
    "config_from_dict",
    "config_help",
    "config_overrides",
    "describe_config",
    "non_negative_int",
    "option",
    "positive_int",
    "read_config_file",
    "read_saved_config",
    "resolve",
]

_FROM_ARGS: Any = object()  # resolve(file=...) not given: read --config FILE when the command has one

C = TypeVar("C")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def option(default: Any, help: str, **cli: Any) -> Any:  # noqa: A002 (help is the natural name here)
    """A config field with its help text; ``cli`` are argparse settings of its flag (``type``, ``choices``,
    ``flag`` for a name other than ``--field-name``)."""
    return field(default=default, metadata={"help": help, "cli": cli})


def config_help(cls: type) -> dict[str, str]:
    """Field name -> help text."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """``cls(**data)``; a key that is not a field is an error (never dropped), naming the fields."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}; the fields are {names}")
    hints = typing.get_type_hints(cls)
    checked = {k: _checked_value(cls.__name__, k, v, hints[k]) for k, v in data.items()}
    return cls(**checked)


def _checked_value(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the field's type (an int where a float is asked, a list where a tuple is), or a ValueError
    naming the field: a string where a number is asked, a bool where a number is, a NaN or an infinity."""
    kind, many = _base_type(annotation)
    optional = type(None) in typing.get_args(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{owner}.{name} may not be None")
    if many:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{owner}.{name}={value!r} must be a list of {kind.__name__}")
        items = [_scalar(owner, name, v, kind) for v in value]
        return items if typing.get_origin(_strip_none(annotation)) is list else tuple(items)
    return _scalar(owner, name, value, kind)


def _strip_none(annotation: Any) -> Any:
    """``X | None`` -> X; anything else as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(annotation) and len(args) == 1 else annotation


def _scalar(owner: str, name: str, value: Any, kind: Any) -> Any:
    wrong = ValueError(f"{owner}.{name}={value!r} must be {getattr(kind, '__name__', kind)}")
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise wrong
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if not math.isfinite(value):
            raise ValueError(f"{owner}.{name}={value!r} must be a finite number")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise wrong
    return value


def read_config_file(path: str | Path, cls: type) -> dict[str, Any]:
    """The JSON object of ``cls`` fields in ``path`` (checked against the fields, not yet validated)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON {cls.__name__} file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of {cls.__name__} fields")
    return data


def describe_config(config: Any) -> str:
    """Every field with its value and help, one per line (``--show-config``)."""
    helps = config_help(type(config))
    return "\n".join(f"{name:>22} = {getattr(config, name)!r:<26} {text}" for name, text in helps.items())


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the scalar type of a field, whether it is a tuple of them): int | None -> (int, False)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return args[0], True
    if args and origin is not None:  # a union with None
        return _base_type(args[0])
    return annotation, False


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: tuple[str, ...] = (),
    group_title: str | None = None,
    show_defaults: bool = True,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per field of ``cls`` (``--field-name``) with its help and default; every flag defaults to
    None, so :func:`config_overrides` sees only the flags given. Booleans get ``--x/--no-x``, tuples take
    several values. ``show_defaults=False`` where another source (a preset) sets the defaults; ``defaults``
    names the command's own defaults where they differ from the fields' (shown in the help)."""
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(group_title or f"{cls.__name__} fields") if group_title != "" else parser
    for f in fields(cls):
        if f.name in skip:
            continue
        cli = dict(f.metadata.get("cli", {}))
        flag = cli.pop("flag", "--" + f.name.replace("_", "-"))
        default = (defaults or {}).get(f.name, _default(f))
        shown = show_defaults and default is not MISSING
        text = f.metadata.get("help", "") + (f" (default: {default!r})" if shown else "")
        kind, many = _base_type(hints[f.name])
        if kind is bool:
            kwargs = {"action": argparse.BooleanOptionalAction, "default": None}
            target.add_argument(flag, dest=f.name, help=text.replace("%", "%%"), **kwargs)
            continue
        kwargs: dict[str, Any] = {"type": kind, **cli}
        if many:
            kwargs["nargs"] = "+"
        target.add_argument(flag, dest=f.name, default=None, help=text.replace("%", "%%"), **kwargs)


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def config_overrides(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (flags left at None are not given; ``skip``: fields the
    command sets itself); tuples as tuples."""
    out = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def _set_items(items: list[str] | None) -> dict[str, Any]:
    """``--set FIELD=VALUE ...``: each value read as JSON where it parses (numbers, true, lists), else a string."""
    out = {}
    for item in items or ():
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_saved_config(path: Path, what: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a run saved (its ``config.json``), or a ValueError naming the file when it is not one."""
    try:
        saved = json.loads(Path(path).read_text())
        missing = [k for k in required if k not in saved]
        if not isinstance(saved, dict) or missing:
            raise ValueError(f"missing {missing}" if missing else "not a JSON object")
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not the config.json of {what} ({e!r}); cannot resume from it") from None
    return saved


def resolve(
    cls: type[C],
    args: argparse.Namespace,
    *,
    defaults: dict[str, Any] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
    file: str | Path | dict[str, Any] | None = _FROM_ARGS,
    skip: tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
    saved: dict[str, Any] | None = None,
    pinned: tuple[str, ...] = (),
) -> C:
    """The one place where a command's settings meet; each layer overrides the ones before it:

    1. the fields' defaults, then the command's own ``defaults``;
    2. ``saved``: a resumed run's config (its fields, where the run is resumed);
    3. a preset: ``presets[args.preset]``, or the preset a config file names (a file that names none uses none);
    4. the config file (``args.config`` unless ``file`` is given: a path or the dict already read);
    5. the flags given (``--field-name``, fields in ``skip`` excepted), then ``args.set`` (``FIELD=VALUE``);
    6. ``fixed``: what the command sets itself (its output folder, the resolved device); None values are not set;
    7. ``pinned`` fields of ``saved``: what a resumed run cannot change (its architecture).

    Lists become tuples where the field is one, and :func:`config_from_dict` checks every value.
    """
    if file is _FROM_ARGS:
        file = getattr(args, "config", None)
    file_values = dict(read_config_file(file, cls) if isinstance(file, str | Path) else file or {})
    preset_name = getattr(args, "preset", None) if presets is not None else None
    if presets is not None and file is not None:
        preset_name = file_values.pop("preset", None)
    if preset_name is not None and preset_name not in (presets or {}):
        raise ValueError(f"{file or 'preset'}: unknown preset {preset_name!r}; choose from {sorted(presets or {})}")
    values: dict[str, Any] = {**(defaults or {}), **(saved or {})}
    values.update(presets[preset_name] if preset_name is not None else {})
    values.update(file_values)
    values.update(config_overrides(cls, args, skip))
    values.update(_set_items(getattr(args, "set", None)))
    values.update({k: v for k, v in (fixed or {}).items() if v is not None})
    values.update({k: saved[k] for k in pinned if saved and k in saved})
    return config_from_dict(cls, values)
