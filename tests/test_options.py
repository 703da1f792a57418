"""training/options.py's extras: type=/action=/flag=/positional in opt(...), fields off the command line,
fields without a default, parse_options and run_main."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from faceapp.errors import CheckpointError
from training.options import opt, parse_command, parse_options, run_main


def _pair(text: str) -> tuple[str, str]:
    a, b = text.split(":")
    return a, b


@dataclass(frozen=True)
class Extras:
    out: str = opt(dataclasses.MISSING, "output", required=True)
    runs: tuple[str, ...] = opt(None, "run folders", positional=True, nargs="+")
    pairs: tuple[tuple[str, str], ...] = opt((), "A:B; repeatable", type=_pair, action="append")
    names: tuple[str, ...] = opt(None, "names", nargs="+")
    write: bool = opt(True, "measure only", flag="--dry-run", action="store_false")
    quick: bool = opt(False, "quick", action="store_true")
    mirror: bool = opt(False, "mirror")
    hidden: int = opt(3, None)


def test_extras_pass_through_to_argparse():
    o = parse_options(Extras, ["r1", "r2", "--out", "x", "--pairs", "a:b", "--pairs", "c:d", "--names", "p", "q",
                               "--dry-run", "--quick"])
    assert o == Extras(out="x", runs=("r1", "r2"), pairs=(("a", "b"), ("c", "d")), names=("p", "q"), write=False,
                       quick=True, mirror=False, hidden=3)
    d = parse_options(Extras, ["r", "--out", "y"])
    assert (d.write, d.quick, d.pairs, d.names, d.hidden) == (True, False, (), None, 3)  # the defaults


def test_the_generated_help_and_flags(capsys):
    with pytest.raises(SystemExit):
        parse_options(Extras, ["--help"], prog="x")
    text = capsys.readouterr().out
    assert "--dry-run" in text and "--write" not in text and "--no-dry-run" not in text
    assert "--quick" in text and "--no-quick" not in text and "--no-mirror" in text  # plain bools: both
    assert "--hidden" not in text and "runs" in text
    assert "[True]" not in text and "[]" not in text  # implied and empty defaults are not shown
    with pytest.raises(SystemExit):
        parse_options(Extras, ["r"])  # --out is required
    with pytest.raises(SystemExit):
        parse_options(Extras, ["r", "--out", "x", "--pairs", "nocolon"])  # type= is used


def test_run_main_turns_faceapp_errors_into_exit_2(capsys):
    def fails(o):
        raise CheckpointError("no such file")

    assert run_main(fails, None) == 2 and "error: no such file" in capsys.readouterr().err
    assert run_main(lambda o: None, None) == 0


@dataclass(frozen=True)
class Fit:
    out: str = opt("runs/x", "output")
    C: float = opt(1.0, "the SVM's C")  # --C


def test_subcommands_each_from_its_dataclass(capsys):
    commands = {"fit": (Fit, "fit it"), "extras": (Extras, "more")}
    assert parse_command(commands, ["fit", "--C", "0.5"]) == ("fit", Fit(out="runs/x", C=0.5))
    name, o = parse_command(commands, ["extras", "r", "--out", "y"])
    assert name == "extras" and o.runs == ("r",)
    with pytest.raises(SystemExit):
        parse_command(commands, [])  # a subcommand is required
    with pytest.raises(SystemExit):
        parse_command(commands, ["fit", "--quick"])  # another subcommand's flag
