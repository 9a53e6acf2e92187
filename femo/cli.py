"""The ``femo`` command. Each sub-command lives in ``femo/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

Sub-command modules are imported lazily so that ``femo --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: Sub-command name -> module under femo.commands.
COMMANDS: dict[str, str] = {
    "manifest": "manifest",
    "synth": "synth",
    "models": "models",
    "extract": "extract",
    "train": "train",
    "evaluate": "evaluate",
    "report": "report",
    "pipeline": "pipeline",
    "predict": "predict",
    "export": "export",
    "encoder": "encoder",
    "annotate": "annotate",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only`` set, import just that sub-command's module."""
    parser = argparse.ArgumentParser(prog="femo", description="Multimodal dynamic facial emotion recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"see `femo {name} --help`")
            continue
        try:
            mod = importlib.import_module(f"femo.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"femo.commands.{module}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``femo`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
