"""Fixtures for converter tests: hand-made tiny models and real ParaDiS models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
sys.path.insert(0, str(Path(__file__).parents[1] / "core"))

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


EASY_CLASSES = (0, 1, 7, 8)  # T-shirt/top, Trouser, Sneaker, Bag: a briefly trained model is confident on them


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A briefly trained ParaDiS MobileNet with one sync layer, saved as model.keras.

    Returns (model path, model, test images uint8, test labels) on the classes it learnt.
    """
    import keras
    import numpy as np

    from paradis_tf.data import FASHION_MNIST_LABELS, load_fashion_mnist
    from paradis_tf.models import mobilenet_v1

    keras.utils.set_random_seed(0)
    x, y = load_fashion_mnist("train", limit=6000)
    keep = np.isin(y, EASY_CLASSES)
    x, y = x[keep][:2400], y[keep][:2400]
    xt, yt = load_fashion_mnist("test")
    keep = np.isin(yt, EASY_CLASSES)
    xt, yt = xt[keep][:1000], yt[keep][:1000]
    model = mobilenet_v1((28, 28, 1), 10, ["1x1.0", "2x0.5", "4x0.25"], width=0.5, depth=2, sync_layers=(1,),
                         labels=list(FASHION_MNIST_LABELS))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    # 5 epochs, not 3: at 3 the int8/float top-1 agreement of one switch sat at 0.989-0.992
    # depending on float summation order alone (a near-tie model), on the 0.99 line.
    model.fit(x.astype("float32") / 255.0, y, epochs=5, batch_size=64, verbose=0, calibration_steps=4)
    path = tmp_path_factory.mktemp("trained") / "model.keras"
    model.save(path)
    return path, model, xt, yt


@pytest.fixture(scope="session")
def real_bundle(trained, tmp_path_factory):
    """`paradis convert` of the trained model: int8 + float partitions, seq-2 baseline, TFLM artefacts."""
    import paradis_tf.cli as cli_mod

    path, _, _, _ = trained
    out = tmp_path_factory.mktemp("real") / "bundle"
    saved = cli_mod.COMMAND_MODULES
    cli_mod.COMMAND_MODULES = ("convert",)
    try:
        code = cli_mod.main(["convert", str(path), "--out", str(out), "--dataset", "fashion_mnist",
                             "--calib-samples", "200", "--float", "--sequential", "2", "--threads", "1"])
    finally:
        cli_mod.COMMAND_MODULES = saved
    assert code == 0
    return out
