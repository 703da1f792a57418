"""One way to declare a training script's options: a frozen dataclass whose fields say their default and their
--help text (`opt`), the command line generated from it (`add_options`), and the resolved values layered over
its defaults (`layered_values`).

    @dataclass(frozen=True)
    class MyOptions:
        outdir: str = opt(None, "run folder", required=True)
        map_layers: int = opt(2, "mapping network depth")       # --map-layers, type int, help "... [2]"
        blocks: tuple[int, ...] = opt((3, 4), "units per stage")  # --blocks 3,4
        mirror: bool = opt(False, "add mirrored copies")          # --mirror / --no-mirror
        run: str = opt(None, "run folder", positional=True)      # a positional argument
        dry_run: bool = opt(False, "only report", action="store_true")  # --dry-run alone
        write: bool = opt(True, "leave it", flag="--dry-run", action="store_false")  # a flag named otherwise

Extras in opt(...) go to argparse as they are (choices, required, metavar, nargs, action, type=: a parser for
values the int/float/str/tuple-of-ints mapping does not cover), except `flag=` (the flag, when it is not the
field's name) and `positional=True`; opt(default, None) is a field that is not on the command line. A field
declared without a default (dataclasses.MISSING) must be given.

Every flag's argparse default is None, meaning "not given", so that the values a script resolves go
defaults < presets (a recipe, --cpu-smoke, ...) < what was given. A field left at AUTO (None) is one the script
fills in from other values (the device, a size that depends on the data). The dataclass is what a run saves
(options.json, a snapshot's header): `dataclasses.asdict` of it, tuples as JSON lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import field

__all__ = ["AUTO", "opt", "add_options", "given_options", "layered_values", "option_flag", "parse_options",
           "parse_command", "run_main", "training_parser"]

AUTO = None  # an option left at AUTO is filled in when the options are resolved


def opt(default, help: str, **argparse_kwargs):  # noqa: A002 (argparse's name)
    """An options field: its default (dataclasses.MISSING: none), its --help text and any argparse extras
    (choices, required, metavar, type, action, flag=, positional=True), declared once."""
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
    if t.startswith("tuple[int"):
        return _ints
    t = t.removeprefix("tuple[")  # tuple[str, ...] / tuple[float, ...]: one element (with nargs= or action="append")
    return int if t.startswith("int") else float if t.startswith("float") else str


def _shown(default) -> str:
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


_NO_TYPE = ("store_true", "store_false", "store_const", "append_const", "count")


def add_options(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    """Add one flag per field of the dataclass `cls` to `parser` (every default None = 'not given'); the help
    text ends with the field's default in brackets (unless it is None, False, empty, missing or implied by a
    store_true/store_false action). `type=` and `action=` in the field's metadata replace the generated ones."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with opt(default, help)")
        if meta["help"] is None:
            continue  # opt(default, None): not on the command line
        action = meta.get("action")
        shown = not (f.default is None or f.default is False or f.default is dataclasses.MISSING
                     or f.default in ((), "") or action in _NO_TYPE)
        help_ = meta.pop("help") + (f" [{_shown(f.default)}]" if shown else "")
        flag = meta.pop("flag", option_flag(f.name))
        if meta.pop("positional", False):
            names = (f.name,)
        else:
            names, meta["dest"] = (flag,), f.name
        if action is None and _type_name(f) == "bool":
            meta["action"] = argparse.BooleanOptionalAction
        elif action not in _NO_TYPE:
            meta.setdefault("type", _arg_type(f))
        parser.add_argument(*names, default=None, help=help_, **meta)
    return parser


def given_options(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line (those not None in `args`; lists, from nargs or append,
    as tuples)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def layered_values(cls, args: argparse.Namespace, *layers: dict) -> dict:
    """The dataclass's defaults, updated by each of `layers` in turn (later ones win), then by what was given.
    A field without a default is left out unless a layer or the command line gives it."""
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    for layer in layers:
        values.update(layer)
    values.update(given_options(args, cls))
    return values


def parse_options(cls, argv=None, *layers: dict, **parser_kwargs):
    """`cls` from the command line `argv`: a parser generated from it (`parser_kwargs` to ArgumentParser), its
    values layered over the defaults and `layers`."""
    parser = add_options(argparse.ArgumentParser(**parser_kwargs), cls)
    return cls(**layered_values(cls, parser.parse_args(argv), *layers))


def training_parser(cls, description: str, smoke_help: str, **parser_kwargs) -> argparse.ArgumentParser:
    """A training script's command line: `cls`'s flags (raw-text help) plus --cpu-smoke (`smoke_help`) and
    --dry-run, the two flags that steer the script rather than the run."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter,
                                **parser_kwargs)
    add_options(p, cls)
    p.add_argument("--cpu-smoke", action="store_true", help=smoke_help)
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and network sizes, then exit")
    return p


def parse_command(commands: dict, argv=None, **parser_kwargs) -> tuple[str, object]:
    """(name, options) of a command line with subcommands: `commands` maps each name to (options dataclass,
    its one-line help); each subcommand's flags are generated from its dataclass."""
    parser = argparse.ArgumentParser(**parser_kwargs)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, (cls, help_) in commands.items():
        add_options(sub.add_parser(name, help=help_), cls)
    args = parser.parse_args(argv)
    cls = commands[args.cmd][0]
    return args.cmd, cls(**layered_values(cls, args))


def run_main(run, options) -> int:
    """A script's main: `run(options)`; a FaceAppError is printed as one line ('error: ...') and exits 2."""
    from faceapp.errors import FaceAppError

    try:
        run(options)
    except FaceAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
