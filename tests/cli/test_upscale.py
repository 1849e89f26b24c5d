"""`paradis upscale BUNDLE IN OUT`: a real photograph through a super-resolution bundle, here and on the mesh.

Here: the image equals `LocalRunner.upscale` (same int8 partitions, tiles
with a margin of the receptive radius), which equals the Keras switch network
run on the whole photograph up to int8 error. On the mesh (node daemons
without TensorFlow, the command itself without TensorFlow) and on a mixed mesh
whose two quarter-width roles run on emulated serial boards behind bridges:
exactly the LocalRunner image of the same backend.
"""

from __future__ import annotations

import contextlib
import subprocess

import numpy as np
import pytest

from paradis_tf.cli import main
from paradis_tf.runtime import LocalRunner

pytestmark = pytest.mark.slow  # converts a model, runs daemons


def _write(path, pixels):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels).save(path)
    return path


def _read(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        a = np.asarray(img)
    return a if a.ndim == 3 else a[..., None]


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """A real photograph scikit-image ships: 300x451 RGB."""
    import skimage.data

    return skimage.data.chelsea()


def test_upscale_a_photograph_here(sr_bundle, sr_model, chelsea, tmp_path, capsys):
    src = _write(tmp_path / "chelsea.png", chelsea)
    assert main(["upscale", str(sr_bundle), str(src), str(tmp_path / "out.png")]) == 0
    line = capsys.readouterr().out
    assert "(451x300) ->" in line and "(902x600), x2 rgb, plan 1x1.0 here (litert)" in line
    got = _read(tmp_path / "out.png")
    assert got.shape == (600, 902, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, LocalRunner(sr_bundle, "1x1.0").upscale(chelsea))
    # the whole photograph through the Keras switch network in one piece: the tiles add nothing but int8 error
    full = np.asarray(sr_model.switch_model("1x1.0")(chelsea[None].astype(np.float32) / 255, training=False))[0]
    full = np.clip(np.round(full.astype(np.float64) * 255), 0, 255)
    mse = np.mean((got.astype(np.float64) - full) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 40, mse
    # the float partitions tiled the same way are the whole-image network, to float rounding
    floats = LocalRunner(sr_bundle, "2x0.5", precision="float")
    tiled = np.asarray(floats.upscale(chelsea[:100, :130]), np.float64)
    whole = np.asarray(sr_model.switch_model("2x0.5")(chelsea[None, :100, :130].astype(np.float32) / 255))[0]
    assert np.abs(tiled - np.clip(np.round(whole * 255), 0, 255)).max() <= 1
    # JPEG out, another plan, a smaller margin (faster, not exact at the seams)
    assert main(["upscale", str(sr_bundle), str(src), str(tmp_path / "out.jpg"), "--switch", "2x0.5",
                 "--margin", "2"]) == 0
    assert _read(tmp_path / "out.jpg").shape == (600, 902, 3)


def test_bad_inputs_name_what_was_received_and_expected(sr_bundle, chelsea, tmp_path, capsys):
    def run(*args):
        code = main(["upscale", *map(str, args)])
        return code, capsys.readouterr().err

    out = tmp_path / "out.png"
    gray = _write(tmp_path / "gray.png", chelsea[..., :1])
    code, err = run(sr_bundle, gray, out)
    assert code == 1 and "gray.png has 1 channel(s)" in err and "upscales RGB images and takes 3 (RGB) channels" in err
    rgba = _write(tmp_path / "rgba.png", np.concatenate([chelsea, np.full((*chelsea.shape[:2], 1), 255, np.uint8)], -1))
    code, err = run(sr_bundle, rgba, out)
    assert code == 1 and "has 4 channel(s)" in err and "drop the alpha channel" in err
    small = _write(tmp_path / "small.png", chelsea[:20, :30])
    code, err = run(sr_bundle, small, out)
    assert code == 1 and "small.png is 20x30 pixels (height x width); the bundle's partitions take 24x24 tiles" in err
    code, err = run(sr_bundle, tmp_path / "missing.png", out)
    assert code == 1 and "missing.png: no such file" in err
    (tmp_path / "notes.png").write_text("not an image")
    code, err = run(sr_bundle, tmp_path / "notes.png", out)
    assert code == 1 and "not an image Pillow can read" in err
    rgb = _write(tmp_path / "rgb.png", chelsea[:30, :30])
    code, err = run(sr_bundle, rgb, tmp_path / "out.xyz")
    assert code == 1 and "cannot write images with extension '.xyz'" in err
    code, err = run(sr_bundle, rgb, out, "--margin", "12")
    assert code == 1 and "24-pixel tiles keep nothing with a margin of 12 pixels" in err
    assert not out.exists()


def test_a_classifier_bundle_is_refused(saved_model, chelsea, tmp_path, capsys):
    from paradis_tf.convert import convert_model, load_model

    bundle = tmp_path / "classifier"
    calib = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    convert_model(load_model(saved_model("1x1.0")), bundle, calib, calib_samples=4, sequential=(), tflm=False)
    src = _write(tmp_path / "in.png", chelsea[:40, :40])
    assert main(["upscale", str(bundle), str(src), str(tmp_path / "out.png")]) == 1
    err = capsys.readouterr().err
    assert "is a classifier (10 classes), model 'mobilenet_v1'; upscaling needs a super-resolution bundle" in err


def test_mesh_gives_exactly_the_local_image(sr_bundle, chelsea, tmp_path, capsys):
    """Two node daemons serving mutual TLS, and `paradis upscale` itself, without TensorFlow."""
    from paradis_tf.mesh.local import LocalMesh, boot_command
    from paradis_tf.mesh.security import issue, make_ca

    pki = tmp_path / "pki"
    make_ca(pki)
    cert, key = issue(pki, "camera-line", [], role="coordinator")
    tls = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(cert), "--tls-key", str(key)]
    crop = chelsea[100:140, 200:256]
    src = _write(tmp_path / "crop.png", crop)
    with LocalMesh(2, tmp_path / "mesh", capacity=0.5, block_tensorflow=True, pki=pki) as mesh:
        nodes = ",".join(mesh.addresses)
        cmd = boot_command(("upscale",), [str(sr_bundle), str(src), str(tmp_path / "mesh.png"), "--nodes", nodes,
                                          "--switch", "2x0.5", *tls], block_tensorflow=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "plan 2x0.5" in done.stdout and "on the mesh" in done.stdout
        # a classifier's command refuses the image bundle
        assert main(["mesh", "infer", "--nodes", nodes, "--random", "1", *tls]) == 1
        assert "upscale images with `paradis upscale" in capsys.readouterr().err
        # qcheck --nodes of a super-resolution bundle: whole images through the mesh against LocalRunner
        from paradis_tf.mesh.qcheck import mesh_image_check
        from paradis_tf.mesh.security import TlsConfig

        lrs = [crop.astype(np.float32) / 255, chelsea[:30, :70].astype(np.float32) / 255]
        (check,) = mesh_image_check(sr_bundle, mesh.addresses, lrs, plans=["2x0.5"], deploy=False,
                                    tls=TlsConfig.from_args(str(pki / "ca.pem"), str(cert), str(key)))
        assert check.images == 2 and check.identical == 1.0 and check.max_abs_diff == 0.0
    got = _read(tmp_path / "mesh.png")
    np.testing.assert_array_equal(got, LocalRunner(sr_bundle, "2x0.5").upscale(crop))


def test_mixed_mesh_with_serial_boards_gives_exactly_the_local_image(sr_bundle, chelsea, tmp_path, capsys):
    """Switch 0.5+0.25+0.25: role 0 (with the skip branch) on a node daemon, roles 1 and 2 on emulated boards."""
    import json

    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer
    from paradis_tf.mesh.local import BridgeProcess, NodeProcess

    switch = "0.5+0.25+0.25"
    crop = chelsea[150:190, 100:150]
    src = _write(tmp_path / "crop.png", crop)
    stack = contextlib.ExitStack()
    boards = [stack.enter_context(EmulatorServer(BoardEmulator(BoardConfig(
        board_id=f"mcu-{i}", max_payload=256, arena_capacity=128 << 10)), "pty")) for i in range(2)]
    node = NodeProcess(tmp_path / "node0", node_id="node0", capacity=0.5, backend="tflm", block_tensorflow=True)
    bridges = [BridgeProcess(tmp_path / f"bridge{i}", b.url, node_id=f"bridge{i}") for i, b in enumerate(boards)]
    procs = [node, *bridges]
    try:
        for p in procs:
            p.spawn()
        for p in procs:
            p.wait_ready(60)
        nodes = ",".join(p.address for p in procs)
        assert main(["upscale", str(sr_bundle), str(src), str(tmp_path / "mixed.png"), "--nodes", nodes,
                     "--switch", switch]) == 0
        assert f"plan {switch}" in capsys.readouterr().out
        manifest = json.loads((sr_bundle / "manifest.json").read_text())
        shas = {d["segments"][0]["sha256"] for d in manifest["plans"][switch]["devices"][1:]}
        assert {b.board.active.sha256.hex() for b in boards} == shas  # the quarter roles ran on the boards
        assert all(b.board.stats["requests"] >= 4 for b in boards)
    finally:
        for p in procs:
            if p.alive():
                assert p.stop() == 0
        stack.close()
    got = _read(tmp_path / "mixed.png")
    np.testing.assert_array_equal(got, LocalRunner(sr_bundle, switch, backend="tflm").upscale(crop))
    for b in bridges:
        log = b.log_path.read_text(errors="replace")
        assert "is blocked" not in log and "Traceback" not in log, log[-2000:]
