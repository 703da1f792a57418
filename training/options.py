"""One way to declare a training script's options: a frozen dataclass whose fields say their default and their
--help text (`opt`), the command line generated from it (`add_options`), and the resolved values layered over
its defaults (`layered_values`).

    @dataclass(frozen=True)
    class MyOptions:
        outdir: str = opt(None, "run folder", required=True)
        map_layers: int = opt(2, "mapping network depth")       # --map-layers, type int, help "... [2]"
        blocks: tuple[int, ...] = opt((3, 4), "units per stage")  # --blocks 3,4
        mirror: bool = opt(False, "add mirrored copies")          # --mirror / --no-mirror

Every flag's argparse default is None, meaning "not given", so that the values a script resolves go
defaults < presets (a recipe, --cpu-smoke, ...) < what was given. A field left at AUTO (None) is one the script
fills in from other values (the device, a size that depends on the data). The dataclass is what a run saves
(options.json, a snapshot's header): `dataclasses.asdict` of it, tuples as JSON lists.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field

__all__ = ["AUTO", "opt", "add_options", "given_options", "layered_values", "option_flag"]

AUTO = None  # an option left at AUTO is filled in when the options are resolved


def opt(default, help: str, **argparse_kwargs):  # noqa: A002 (argparse's name)
    """An options field: its default, its --help text and any argparse extras (choices, required, metavar),
    declared once."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def option_flag(name: str) -> str:
    """The flag of field `name`: ``--map-layers`` for ``map_layers``."""
    return "--" + name.replace("_", "-")


def _ints(text: str) -> tuple[int, ...]:
    """'3,4,14,3' -> (3, 4, 14, 3)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, e.g. 3,4,14,3") from None


def _type_name(f: dataclasses.Field) -> str:
    """The field's annotation as text ('int', 'float | None', 'tuple[int, ...]'), with or without
    `from __future__ import annotations` in the module that declares it."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _arg_type(f: dataclasses.Field):
    t = _type_name(f)
    if t.startswith("tuple"):
        return _ints
    return int if t.startswith("int") else float if t.startswith("float") else str


def _shown(default) -> str:
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


def add_options(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    """Add one flag per field of the dataclass `cls` to `parser` (every default None = 'not given'); the help
    text ends with the field's default in brackets (unless it is None or False)."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with opt(default, help)")
        help_ = meta.pop("help") + ("" if f.default is None or f.default is False else f" [{_shown(f.default)}]")
        if _type_name(f) == "bool":
            parser.add_argument(option_flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                                help=help_, **meta)
        else:
            parser.add_argument(option_flag(f.name), type=_arg_type(f), default=None, help=help_, **meta)
    return parser


def given_options(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line (those not None in `args`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def layered_values(cls, args: argparse.Namespace, *layers: dict) -> dict:
    """The dataclass's defaults, updated by each of `layers` in turn (later ones win), then by what was given."""
    values = {f.name: f.default for f in dataclasses.fields(cls)}
    for layer in layers:
        values.update(layer)
    values.update(given_options(args, cls))
    return values
