"""Config dataclasses as command-line options.

Every config field carries its help text in `metadata["help"]`; this module turns the
fields into argparse options (`--episodes-per-task 50`), so `--help` documents each
knob where it is defined. argparse keeps `lwd` free of a CLI framework dependency and
supports nested sub-commands (`lwd store info`) directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def documented(default, help: str):
    """A dataclass field whose help text becomes its command-line `--help`."""
    return dataclasses.field(default=default, metadata={"help": help})


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        option = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        optional = origin in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif origin is tuple:
            parser.add_argument(
                option,
                nargs="*",
                type=args[0],
                default=default,
                metavar=f.name.upper(),
                help=f"{help_text} (default: {' '.join(map(str, default))})" if default else help_text,
            )
        else:
            parser.add_argument(
                option, type=hint, default=default, metavar=f.name.upper(), help=f"{help_text} (default: {default})"
            )


def config_from_args(config_cls: type, namespace: argparse.Namespace):
    values = {}
    for f in dataclasses.fields(config_cls):
        value = getattr(namespace, f.name)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return config_cls(**values)


def narrow(config, cls: type):
    """The `cls` part of a config dataclass that extends `cls`, as a plain `cls`."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
