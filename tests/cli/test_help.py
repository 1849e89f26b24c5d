"""Every flag of every `paradis` sub-command says what it does and shows its default."""

from __future__ import annotations

import argparse
import re

import pytest

from paradis_tf.cli import _parsers, build_parser, main

# Words of a measurement, not of what a flag does.
MEASURED = re.compile(r"BENCHMARKS|benchmark|\b(two|three|\d+) seeds\b|\d+ epochs?[,:]|\d+(\.\d+)? points|\bbeat\b", re.I)


def _actions():
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            yield parser.prog, action


def _name(prog, action) -> str:
    return f"{prog} {'/'.join(action.option_strings) or action.dest}"


def test_the_walk_reaches_every_sub_command():
    progs = {prog for prog, _ in _actions()}
    for expected in ("paradis train", "paradis convert", "paradis qcheck", "paradis mesh infer", "paradis mesh bench",
                     "paradis node serve", "paradis certs issue", "paradis demo", "paradis bridge", "paradis flash"):
        assert expected in progs


def test_every_flag_has_help_that_says_what_it_does():
    missing = [_name(p, a) for p, a in _actions() if not a.help or a.help == argparse.SUPPRESS or not a.help.strip("() ")]
    assert missing == []
    measured = [_name(p, a) for p, a in _actions() if MEASURED.search(a.help)]
    assert measured == []


def test_every_default_is_shown_once():
    """A flag with a default shows it with %(default)s (or names it in words when it depends on something)."""
    hidden, twice = [], []
    for prog, a in _actions():
        if a.required or a.default in (None, False, [], argparse.SUPPRESS) or isinstance(a, argparse._StoreTrueAction):
            continue
        if "%(default)s" not in a.help and "default:" not in a.help:
            hidden.append(_name(prog, a))
        if a.help.count("default:") > 1:
            twice.append(_name(prog, a))
    assert hidden == [] and twice == []


def test_help_renders_for_every_parser(capsys):
    for parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "%(" not in text and "==SUPPRESS==" not in text, parser.prog


@pytest.mark.parametrize("argv", [["--log-level", "DEBUG", "plan", "/nonexistent"],
                                  ["plan", "/nonexistent", "--log-level", "DEBUG", "--debug"]])
def test_global_flags_go_before_or_after_the_sub_command(argv, capsys):
    if "--debug" in argv:
        with pytest.raises(Exception):
            main(argv)
    else:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("paradis: ") and err.count("\n") == 1
