"""The `paradis` command line.

Each sub-command lives in its own module of this package exposing
``register(subparsers)``; the module's handler is set with
``parser.set_defaults(func=...)`` and returns an exit code. Heavy imports
(TensorFlow) happen inside handlers only, so `paradis node serve` and
`paradis bridge` start on boards without TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from paradis_tf import __version__
from paradis_tf.errors import ParaDiSError

# Sub-command modules, in the order `paradis --help` lists them.
COMMAND_MODULES = ("train", "eval", "convert", "qcheck", "plan", "demo", "node", "flash", "bridge", "mesh", "certs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paradis",
        description="Train, convert, deploy and run ParaDiS networks across edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"paradis-tf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"paradis_tf.cli.cmd_{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("paradis: interrupted", file=sys.stderr)
        return 130
    except (ParaDiSError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"paradis: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
