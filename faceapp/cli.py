"""Command line: `python -m faceapp <command> ...`.

Each command registers itself in `build_parser` through an `_add_<command>(subparsers)` function
and runs through a handler `(args) -> int`. A FaceAppError becomes one line on stderr and exit
code 2 (no traceback): the message already says what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faceapp.errors import FaceAppError

__all__ = ["build_parser", "main"]


def _format_net(name: str, net) -> str:
    params = sum(p.numel() for p in net.parameters())
    res = getattr(net, "img_resolution", "?")
    return f"{name} ({type(net).__name__}, {res}px, {params:,} parameters)"


def _cmd_convert(args: argparse.Namespace) -> int:
    import os

    import torch

    from faceapp.errors import CheckpointError
    from faceapp.stylegan.checkpoint import save_networks
    from faceapp.stylegan.legacy import detect_format, import_checkpoint

    names = [n.strip() for n in args.nets.split(",") if n.strip()] if args.nets else None
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise CheckpointError(f"{args.output} is also the input; choose another output path")
    fmt = detect_format(args.input)
    imported = import_checkpoint(args.input, device="cpu", names=names)
    extra = dict(imported.extra)
    if fmt != "faceapp":  # re-saving our own file keeps its provenance
        extra["converted_from"] = os.path.basename(args.input)
        extra["source_format"] = fmt
    extra["convert_options"] = {"nets": names, "fp16": bool(args.fp16)}
    save_networks(args.output, imported.nets, extra=extra, dtype=torch.float16 if args.fp16 else None)
    stored = "fp16" if args.fp16 else "float32"
    print(f"read {args.input} ({fmt})")
    for name, net in imported.nets.items():
        print(f"  {_format_net(name, net)}")
    print(f"wrote {args.output} ({len(imported.nets)} network(s), {stored} weights)")
    return 0


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint (NVIDIA .pkl, rosinality .pt, faceapp) to faceapp's format",
        description="Read a StyleGAN2 checkpoint without executing code from it and write faceapp's "
        ".safetensors format. The input format is detected from the file's content.",
    )
    p.add_argument("input", help="NVIDIA stylegan2-ada-pytorch .pkl, rosinality stylegan2-pytorch .pt, "
                   "or a faceapp .safetensors")
    p.add_argument("output", help="where to write the faceapp .safetensors checkpoint")
    p.add_argument("--nets", default=None,
                   help="comma-separated networks to keep, e.g. G_ema or G,D,G_ema (default: all present)")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the file size)")
    p.set_defaults(handler=_cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per faceapp command."""
    parser = argparse.ArgumentParser(prog="faceapp", description="Open-source FaceApp: StyleGAN2 face editing.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_convert(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage error or FaceAppError)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FaceAppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
