"""`paradis convert --sign-key` and `paradis flash --serial --trust-key` (the signature checked on the host)."""

from __future__ import annotations

import shutil

import pytest

from paradis_tf.cli import main
from paradis_tf.mesh.signing import SIGNATURE_FILE, key_id, load_public_key, new_keypair, verify_bundle


@pytest.mark.slow
def test_convert_signs_and_flash_checks_the_signature_before_sending(saved_model, tmp_path, capsys):
    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer

    key, pub = new_keypair(tmp_path / "release.key")
    other_key, other_pub = new_keypair(tmp_path / "other.key")
    kid = key_id(load_public_key(pub))
    model = saved_model("2x0.5")
    args = ["convert", str(model), "--dataset", "fashion_mnist", "--calib-samples", "8", "--switches", "2x0.5",
            "--sequential", "none"]
    # a key that cannot sign is named before the conversion starts, and nothing is written
    assert main([*args, "--out", str(tmp_path / "nb"), "--sign-key", str(pub)]) == 1
    assert "is a public key; signing needs the private key" in capsys.readouterr().err
    assert not (tmp_path / "nb").exists()

    bundle = tmp_path / "b"
    assert main([*args, "--out", str(bundle), "--sign-key", str(key)]) == 0
    assert f"signed {bundle / SIGNATURE_FILE} with key {kid}" in capsys.readouterr().out
    assert verify_bundle(bundle, [load_public_key(pub)]) == kid
    unsigned = tmp_path / "unsigned"
    shutil.copytree(bundle, unsigned)
    (unsigned / SIGNATURE_FILE).unlink()

    with EmulatorServer(BoardEmulator(BoardConfig(board_id="mcu-sig")), "pty") as board:
        flash = ["--serial", board.url, "--switch", "2x0.5", "--role", "1", "--no-activate"]
        # unsigned, or signed by a key not given: refused on the host; the board hears nothing
        assert main(["flash", str(unsigned), *flash, "--trust-key", str(pub)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is not signed (no manifest.sig); a bundle must be signed by a trusted key ({kid})" in err
        assert main(["flash", str(bundle), *flash, "--trust-key", str(other_pub)]) == 1
        assert f"signed by untrusted key(s) {kid}" in capsys.readouterr().err
        assert board.board.stats["requests"] == 0
        # signed by a trusted key (one of several given): flashed and verified by the board
        assert main(["flash", str(bundle), *flash, "--trust-key", str(other_pub), "--trust-key", str(pub)]) == 0
        out = capsys.readouterr().out
        assert f"signed by trusted key {kid}" in out and "the board verified sha256" in out
        assert board.board.stats["requests"] > 0
