"""The `paradis` command line.

Each sub-command lives in its own module of this package exposing
``register(subparsers)``; the module's handler is set with
``parser.set_defaults(func=...)`` and returns an exit code. Heavy imports
(TensorFlow) happen inside handlers only, so `paradis node serve` and
`paradis bridge` start on boards without TensorFlow.

Errors print one line, ``paradis: <what> (<what to do>)``, and exit 1 (2 for a
command line that must change, such as plaintext off loopback);
``--debug`` shows the traceback. ``--log-level`` (default WARNING, INFO for
the daemons) sets how much the libraries may say.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from paradis_tf import __version__
from paradis_tf.cli._logs import DEFAULT_LOG_LEVEL, LOG_LEVELS, cli_logging
from paradis_tf.errors import ParaDiSError

# Sub-command modules, in the order `paradis --help` lists them.
COMMAND_MODULES = ("train", "eval", "convert", "qcheck", "plan", "upscale", "demo", "node", "flash", "bridge", "mesh", "certs", "keys",
                   "sign")


def _add_global_args(parser: argparse.ArgumentParser, root: bool) -> None:
    """``--debug`` and ``--log-level``, accepted before or after the sub-command.

    On sub-commands they default to `argparse.SUPPRESS`, so that a value
    given before the sub-command is not overwritten by the sub-parser's default.
    """
    g = parser.add_argument_group("global options")
    if root:
        g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        g.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                       help=f"what the libraries may print: DEBUG shows TensorFlow's and the converter's own logs and "
                            f"Python warnings (default: {DEFAULT_LOG_LEVEL}; INFO for node serve and bridge)")
    else:
        g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback on errors (as `paradis --debug`)")
        g.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                       help="what the libraries may print (as `paradis --log-level`)")


def _parsers(parser: argparse.ArgumentParser):
    """The parser and every sub-parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paradis",
        description="Train, convert, deploy and run ParaDiS networks across edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"paradis-tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"paradis_tf.cli.cmd_{name}").register(sub)
    for p in _parsers(parser):
        _add_global_args(p, root=p is parser)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or getattr(args, "default_log_level", DEFAULT_LOG_LEVEL)
    try:
        with cli_logging(level, explicit=args.log_level is not None):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("paradis: interrupted", file=sys.stderr)
        return 130
    except (ParaDiSError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"paradis: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except Exception as e:  # a bug, or a library failing in a way this kit does not translate yet
        if args.debug:
            raise
        print(f"paradis: unexpected {type(e).__name__}: {_one_line(e)[:300]} (rerun with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
