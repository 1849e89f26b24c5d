"""`paradis` errors: one line `paradis: <what> (<what to do>)`, exit 1, `--debug` for the traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paradis_tf.cli import main
from paradis_tf.convert import ConversionError


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("paradis: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", [["eval"], ["convert", "--out", "unused", "--dataset", "fashion_mnist"]])
def test_a_text_file_is_not_a_model(command, tmp_path, capsys):
    text = tmp_path / "model.keras"
    text.write_text("not a model\n")
    argv = [command[0], str(text), *command[1:]]
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert f"{text} is not a Keras model file (a .keras zip archive)" in err and "File not found" not in err
    assert "`paradis train --out`" in err
    with pytest.raises(ConversionError, match="not a Keras model file"):
        main(["--debug", *argv])


def test_a_corrupt_image_is_named(saved_model, png, tmp_path, capsys):
    data = tmp_path / "data"
    png(data / "Trouser" / "a.png", np.zeros((28, 28, 1), np.uint8))
    (data / "Bag").mkdir()
    (data / "Bag" / "broken.png").write_bytes(b"this is text, not a PNG")
    assert main(["eval", str(saved_model("1x1.0", "2x0.5")), "--data", str(data)]) == 1
    err = _one_line_error(capsys)
    assert f"{data / 'Bag' / 'broken.png'} could not be decoded as an image" in err
    assert "function_node" not in err and "Op:" not in err


def test_eval_refuses_classes_that_do_not_match_the_model(saved_model, png, tmp_path, capsys):
    model = saved_model("1x1.0", "2x0.5")
    rng = np.random.default_rng(0)
    data = tmp_path / "three"
    for name in ("apple", "pear", "plum"):
        for i in range(4):
            png(data / name / f"{i}.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
    assert main(["eval", str(model), "--data", str(data)]) == 1
    err = _one_line_error(capsys)
    assert f"--data {data} has 3 classes (apple, pear, plum) but the model predicts 10" in err

    # folders named as some of the model's labels are those classes
    named = tmp_path / "named"
    for name in ("Trouser", "Bag", "T-shirt_top"):
        for i in range(4):
            png(named / name / f"{i}.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
    assert main(["eval", str(model), "--data", str(named), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1 and set(out["top1"]) == {"1x1.0", "2x0.5"}


def test_an_unexpected_failure_is_one_line_and_debug_shows_it(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    (bundle / "manifest.json").mkdir(parents=True)  # a directory where the manifest should be
    assert main(["plan", str(bundle)]) == 1
    err = _one_line_error(capsys)
    assert "manifest.json" in err
    with pytest.raises(Exception):
        main(["plan", str(bundle), "--debug"])
