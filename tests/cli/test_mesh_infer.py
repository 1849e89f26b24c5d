"""`paradis mesh infer --input`: image files, image folders, class folders and .npy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from paradis_tf.bundle import ModelInfo, Preprocessing
from paradis_tf.cli import main
from paradis_tf.cli._inputs import load_inputs
from paradis_tf.errors import DatasetError, InputError

MODEL = ModelInfo(name="m", input_shape=(28, 28, 1), num_classes=10, preprocessing=Preprocessing(1 / 255, -0.5),
                  labels=None)


def test_inputs_are_decoded_resized_and_preprocessed_as_the_manifest_says(png, tmp_path):
    rng = np.random.default_rng(0)
    one = png(tmp_path / "one.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
    big = png(tmp_path / "classes" / "cat" / "big.png", np.full((56, 40, 3), 200, np.uint8))  # RGB, other size
    png(tmp_path / "classes" / "dog" / "d.png", np.zeros((28, 28, 1), np.uint8))
    raw = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "raw.npy", raw)
    x, names = load_inputs([str(one), str(tmp_path / "raw.npy"), str(tmp_path / "classes")], MODEL)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert names == [str(one), f"{tmp_path / 'raw.npy'}[0]", f"{tmp_path / 'raw.npy'}[1]", str(big),
                     str(tmp_path / "classes" / "dog" / "d.png")]
    np.testing.assert_allclose(x[1:3], raw / 255 - 0.5, atol=1e-6)
    np.testing.assert_allclose(x[3], 200 / 255 - 0.5, atol=1e-6)  # grey 200 resized, one channel
    assert x[4].max() == pytest.approx(-0.5)


def test_unusable_inputs_are_named(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(InputError, match=r"wrong.npy: expected images of shape \(N, 28, 28, 1\)"):
        load_inputs([str(tmp_path / "wrong.npy")], MODEL)
    with pytest.raises(DatasetError, match="missing.png does not exist"):
        load_inputs([str(tmp_path / "missing.png")], MODEL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty holds no images"):
        load_inputs([str(tmp_path / "empty")], MODEL)


@pytest.mark.slow
def test_mesh_infer_takes_images_and_class_folders(saved_model, png, tmp_path, capsys):
    from paradis_tf.convert import convert_model, load_model
    from paradis_tf.mesh.local import LocalMesh

    bundle = tmp_path / "bundle"
    calib = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    convert_model(load_model(saved_model("2x0.5", "1x0.5")), bundle, calib, switches=["1x0.5"], calib_samples=8,
                  tflm=False)
    shirt = png(tmp_path / "shirt.png", np.full((28, 28, 1), 90, np.uint8))
    png(tmp_path / "folder" / "Bag" / "b.png", np.full((28, 28, 1), 30, np.uint8))
    with LocalMesh(1, tmp_path / "mesh", capacity=1.0, block_tensorflow=True) as mesh:
        assert main(["flash", str(bundle), "--node", mesh.addresses[0], "--activate", "auto"]) == 0
        capsys.readouterr()
        assert main(["mesh", "infer", "--nodes", mesh.addresses[0], "--input", str(shirt), str(tmp_path / "folder"),
                     "--top", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("0:", "1:"))]
    assert len(rows) == 2 and rows[0].endswith(str(shirt)) and rows[1].endswith(str(tmp_path / "folder" / "Bag" / "b.png"))
    assert "2 image(s)" in out
