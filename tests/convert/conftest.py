"""Fixtures for converter tests: hand-made tiny models and real ParaDiS models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))

from tiny_paradis import TinyParaDiS, images  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    from paradis_tf.convert import convert_model

    out = tmp_path_factory.mktemp("convert") / "tiny"
    convert_model(TinyParaDiS(switches=("1x1.0", "2x0.5", "0.5+0.25+0.25")), out, images(24), calib_samples=16,
                  sequential=(2, 3), num_threads=1)
    return out


@pytest.fixture
def cli(monkeypatch, capsys):
    """Runs `paradis <args>` in-process with this issue's sub-commands; returns (code, stdout, stderr)."""
    import paradis_tf.cli as cli_mod

    monkeypatch.setattr(cli_mod, "COMMAND_MODULES", ("convert", "qcheck", "plan"))

    def run(*args: str):
        code = cli_mod.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


__all__ = ["TinyParaDiS", "images"]
