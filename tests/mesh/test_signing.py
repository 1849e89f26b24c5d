"""Signed bundles: ed25519 keys, `sign_bundle`/`verify_bundle`, and nodes and bridges started with --trust-key.

The daemon tests replay what an attacker on the network would send, as raw
Deploy streams (a coordinator checks a bundle against its manifest before
it sends anything, an attacker does not): an unsigned bundle, one signed by
a key the node does not trust, a signed bundle with one segment file
changed, and the same with the manifest's sha256 rewritten to match. Each
is refused with PERMISSION_DENIED before the version is committed: the
store and the active version stay as they were, and the signed original is
deployed, activated and served.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from paradis_tf.bundle import BundleError
from paradis_tf.cli import main
from paradis_tf.mesh import limits
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.coordinator import Coordinator
from paradis_tf.mesh.local import BridgeProcess, NodeProcess
from paradis_tf.mesh.signing import (
    SIGNATURE_FILE,
    KeyFileError,
    SignatureError,
    key_id,
    load_private_key,
    load_public_key,
    new_keypair,
    public_key_path,
    sign_bundle,
    signature_key_ids,
    verify_bundle,
)
from paradis_tf.runtime import LocalRunner

PLAN = "1x0.25"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: ``a`` (the one nodes trust) and ``b`` (someone else's)."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("a", "b"):
        key, pub = new_keypair(d / f"{name}.key")
        out[name] = (key, pub, key_id(load_public_key(pub)))
    return out


def _copy(bundle_dir: Path, dest: Path) -> Path:
    shutil.copytree(bundle_dir, dest)
    return dest


def _segment_files(root: Path) -> list[str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return sorted({s["file"] for p in manifest["plans"].values() for d in p["devices"] for s in d["segments"]})


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------
# keys


def test_new_keypair_names_modes_and_refuses_to_overwrite(tmp_path):
    key, pub = new_keypair(tmp_path / "release.key")
    assert (key, pub) == (tmp_path / "release.key", tmp_path / "release.pub")
    key2, pub2 = new_keypair(tmp_path / "KEY")
    assert (key2, pub2) == (tmp_path / "KEY", tmp_path / "KEY.pub")
    assert public_key_path("a/b.c.key") == Path("a/b.c.pub") and public_key_path("k.pem") == Path("k.pem.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # the key id: the first 16 hex digits of sha256 over the raw 32-byte public key
    public = load_public_key(pub)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32 and key_id(public) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(load_private_key(key).public_key()) == key_id(public) != key_id(load_public_key(pub2))
    # nothing is overwritten: neither the private key nor a public key that is there alone
    before = key.read_bytes(), pub.read_bytes()
    with pytest.raises(KeyFileError, match="release.key exists already; refusing to overwrite"):
        new_keypair(key)
    (tmp_path / "other.pub").write_text("mine")
    with pytest.raises(KeyFileError, match="other.pub exists already"):
        new_keypair(tmp_path / "other.key")
    assert (key.read_bytes(), pub.read_bytes()) == before and not (tmp_path / "other.key").exists()
    # the wrong file for the purpose is named
    with pytest.raises(KeyFileError, match="is a private key; give its public key"):
        load_public_key(key)
    with pytest.raises(KeyFileError, match="is a public key; signing needs the private key"):
        load_private_key(pub)
    with pytest.raises(KeyFileError, match="'.*missing.pub' does not exist"):
        load_public_key(tmp_path / "missing.pub")


def test_keys_cli(tmp_path, capsys):
    assert main(["keys", "new", str(tmp_path / "release.key")]) == 0
    out = capsys.readouterr().out
    kid = key_id(load_public_key(tmp_path / "release.pub"))
    assert f"private key {tmp_path / 'release.key'}" in out and f"public key  {tmp_path / 'release.pub'}" in out
    assert f"key id      {kid}" in out
    assert main(["keys", "id", str(tmp_path / "release.pub")]) == 0
    assert capsys.readouterr().out == kid + "\n"
    assert main(["keys", "id", str(tmp_path / "release.key")]) == 0  # the private key names the same id
    assert capsys.readouterr().out == kid + "\n"
    assert main(["keys", "new", str(tmp_path / "release.key")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("paradis: ") and "exists already; refusing to overwrite" in err and err.count("\n") == 1


# --------------------------------------------------------------------------
# sign and verify, in process


def test_sign_and_verify_round_trip(bundle4, keys, tmp_path, capsys):
    (ka, pa, ida), (kb, pb, idb) = keys["a"], keys["b"]
    trusted_a, trusted_b = [load_public_key(pa)], [load_public_key(pb)]
    b = _copy(bundle4, tmp_path / "b")
    label = f"bundle {str(b)!r}"
    with pytest.raises(SignatureError, match=f"{label} is not signed .*trusted key \\({ida}\\)"):
        verify_bundle(b, trusted_a)

    r = sign_bundle(b, ka)
    assert (r.key_id, r.replaced, r.dropped, r.kept) == (ida, False, (), ())
    sig = json.loads((b / SIGNATURE_FILE).read_text())
    assert sig["manifest_sha256"] == hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()
    [entry] = sig["signatures"]
    assert entry["algorithm"] == "ed25519" and entry["key_id"] == ida and len(base64.b64decode(entry["signature"])) == 64
    assert verify_bundle(b, trusted_a) == ida
    with pytest.raises(SignatureError, match=f"signed by untrusted key\\(s\\) {ida}; trusted: {idb}"):
        verify_bundle(b, trusted_b)

    # a second key adds its entry; signing again with a key replaces its own
    assert sign_bundle(b, kb).kept == (ida,)
    assert signature_key_ids(b) == [ida, idb] and verify_bundle(b, trusted_b) == idb
    r = sign_bundle(b, ka)
    assert r.replaced and r.kept == (idb,) and sorted(signature_key_ids(b)) == sorted([ida, idb])

    # a file changed after signing: named, with the key
    seg = b / _segment_files(b)[0]
    original = seg.read_bytes()
    _flip_byte(seg)
    with pytest.raises(SignatureError, match=f"file '{_segment_files(b)[0]}' was changed after signing: its sha256 is "
                                             f".*signed by key {ida} says"):
        verify_bundle(b, trusted_a)
    with pytest.raises(BundleError, match="sha256 mismatch"):  # nothing is signed over files that disagree
        sign_bundle(b, ka)
    seg.write_bytes(original)
    # a file the manifest lists may be absent (a node keeps only what it runs); those present must match
    partial = _copy(b, tmp_path / "partial")
    (partial / _segment_files(b)[-1]).unlink()
    assert verify_bundle(partial, trusted_a) == ida

    # the manifest changed after signing: the signature no longer matches; re-signing drops the stale entry
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["note"] = "edited"
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(SignatureError, match=f"the signature of key {ida} does not match manifest.json"):
        verify_bundle(b, trusted_a)
    b2 = _copy(bundle4, tmp_path / "b2")
    sign_bundle(b2, ka)
    sign_bundle(b2, kb)
    m2 = json.loads((b2 / "manifest.json").read_text())
    m2["note"] = "edited"
    (b2 / "manifest.json").write_text(json.dumps(m2, indent=2))
    r = sign_bundle(b2, ka)
    assert r.replaced and r.dropped == (idb,) and signature_key_ids(b2) == [ida]

    # a malformed signature file is named, not a crash
    (b2 / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(SignatureError, match="manifest.sig is malformed"):
        verify_bundle(b2, trusted_a)
    assert main(["sign", str(b2), "--key", str(ka)]) == 1
    assert "remove" in capsys.readouterr().err


def test_sign_cli(bundle4, keys, tmp_path, capsys):
    (ka, pa, ida), (kb, pb, idb) = keys["a"], keys["b"]
    b = _copy(bundle4, tmp_path / "b")
    assert main(["sign", str(b), "--key", str(ka)]) == 0
    assert capsys.readouterr().out == f"signed {b / SIGNATURE_FILE} with key {ida}\n"
    assert main(["sign", str(b), "--key", str(kb)]) == 0
    assert capsys.readouterr().out == f"signed {b / SIGNATURE_FILE} with key {idb}\nalso signed by: {ida}\n"
    assert main(["sign", str(b), "--key", str(pb)]) == 1
    assert "is a public key; signing needs the private key" in capsys.readouterr().err


# --------------------------------------------------------------------------
# a real node daemon with --trust-key


def _stub(address: str):
    ch = grpc.insecure_channel(address, options=limits.CHANNEL_OPTIONS)
    return ch, mesh_pb2_grpc.NodeStub(ch)


def _raw_deploy(address: str, root: Path, name: str) -> mesh_pb2.DeployReply:
    """A Deploy stream as an attacker sends it: each file declared with the sha256 of the bytes it really sends."""
    rels = ["manifest.json", *([SIGNATURE_FILE] if (root / SIGNATURE_FILE).exists() else []), *_segment_files(root)]
    data = [(rel, (root / rel).read_bytes()) for rel in rels]
    msgs = [mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(
        bundle=name, manifest_sha256=hashlib.sha256(data[0][1]).hexdigest(),
        files=[mesh_pb2.FileEntry(path=rel, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for rel, d in data]))]
    for i, (_, d) in enumerate(data):
        msgs += [mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=o, data=d[o:o + 65536]))
                 for o in range(0, len(d), 65536)]
    msgs.append(mesh_pb2.DeployRequest(commit=mesh_pb2.DeployCommit()))
    ch, stub = _stub(address)
    with ch:
        return stub.Deploy(iter(msgs), timeout=60)


def _refused(call, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, e.value.details()
    return e.value.details()


def _info(address: str) -> mesh_pb2.NodeInfo:
    ch, stub = _stub(address)
    with ch:
        return stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=30)


def _activate(address: str, name: str, version: str, activation_id: str) -> mesh_pb2.ActivateReply:
    ch, stub = _stub(address)
    with ch:
        return stub.Activate(mesh_pb2.ActivateRequest(bundle=name, version=version, plan=PLAN, role=0,
                                                      activation_id=activation_id), timeout=60)


def _snapshot(store: Path) -> dict[str, str]:
    """Every file under the store's bundles/ and tmp/, with its sha256."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("bundles", "tmp") for p in sorted((store / sub).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_node_with_trust_key_refuses_unsigned_untrusted_and_changed_bundles(bundle4, keys, images, tmp_path, capsys):
    (ka, pa, ida), (kb, pb, idb) = keys["a"], keys["b"]
    name = json.loads((bundle4 / "manifest.json").read_text())["model"]["name"]
    version = hashlib.sha256((bundle4 / "manifest.json").read_bytes()).hexdigest()[:16]
    unsigned = _copy(bundle4, tmp_path / "unsigned")
    older = _copy(bundle4, tmp_path / "older")  # another version, deployed before the node trusted any key
    m = json.loads((older / "manifest.json").read_text())
    m["note"] = "an older build"
    (older / "manifest.json").write_text(json.dumps(m, indent=2))
    older_version = hashlib.sha256((older / "manifest.json").read_bytes()).hexdigest()[:16]
    signed = _copy(bundle4, tmp_path / "signed")
    sign_bundle(signed, ka)
    untrusted = _copy(bundle4, tmp_path / "untrusted")
    sign_bundle(untrusted, kb)
    seg = _segment_files(bundle4)[0]
    changed = _copy(signed, tmp_path / "changed")  # one segment changed, the signed manifest left as it was
    _flip_byte(changed / seg)
    rewritten = _copy(changed, tmp_path / "rewritten")  # ... and its sha256 rewritten in the manifest
    m = json.loads((rewritten / "manifest.json").read_text())
    new_sha = hashlib.sha256((rewritten / seg).read_bytes()).hexdigest()
    m["files"][seg]["sha256"] = new_sha
    for p in m["plans"].values():
        for d in p["devices"]:
            for s in d["segments"]:
                if s["file"] == seg:
                    s["sha256"] = new_sha
    (rewritten / "manifest.json").write_text(json.dumps(m, indent=2))
    x = images[:4]
    want = LocalRunner(signed, PLAN).predict(x)

    node = NodeProcess(tmp_path / "store", node_id="signed-node", capacity=1.0, block_tensorflow=True)
    try:
        # 1. without --trust-key: one warning at start; an unsigned version is deployed and activated
        node.start()
        log = node.log_path.read_text()
        assert log.count("bundles are not verified") == 1 and "--trust-key PUB" in log
        assert list(_info(node.address).trusted_keys) == []
        with Coordinator([node.address]) as c:
            c.deploy(older)
            c.select(PLAN)
        assert node.stop() == 0

        # 2. restarted with --trust-key: the stored unsigned version is neither restored nor activated
        node.extra_args = ("--trust-key", str(pa))
        node.start()
        log = node.log_path.read_text()
        assert log.count("bundles are not verified") == 1
        assert "could not restore the last activation" in log and "is not signed" in log
        info = _info(node.address)
        assert list(info.trusted_keys) == [ida] and not info.active
        msg = _refused(lambda: _activate(node.address, name, older_version, "stored-before-keys"))
        assert msg.startswith(f"activate refused: bundle {name!r} version {older_version} is not signed") and ida in msg

        # 3. the attacks, each refused before the version is committed: nothing of the store changes
        before = _snapshot(node.store)
        for bundle_dir, expected in [
            (unsigned, f"bundle {name!r} version {version} is not signed (no manifest.sig); a bundle must be signed "
                       f"by a trusted key ({ida})"),
            (untrusted, f"is signed by untrusted key(s) {idb}; trusted: {ida}"),
            (changed, f"file {seg!r} was changed after signing: its sha256 is"),
            (rewritten, f"the signature of key {ida} does not match manifest.json"),
        ]:
            msg = _refused(lambda: _raw_deploy(node.address, bundle_dir, name))
            assert msg.startswith("deploy refused: bundle ") and expected in msg, msg
            assert _snapshot(node.store) == before
        assert not _info(node.address).active
        # through `paradis flash --activate`: exits 1 with the node's refusal on one line
        assert main(["flash", str(unsigned), "--node", node.address, "--activate", PLAN]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "PERMISSION_DENIED: deploy refused" in err and f"trusted key ({ida})" in err
        # --trust-key on the host refuses before anything is sent
        deploys = _info(node.address).counters.deploys
        assert main(["flash", str(unsigned), "--node", node.address, "--trust-key", str(pa)]) == 1
        assert f"is not signed (no manifest.sig); a bundle must be signed by a trusted key ({ida})" in capsys.readouterr().err
        assert _info(node.address).counters.deploys == deploys and _snapshot(node.store) == before

        # 4. the signed original: deployed (its signature is stored with it), activated, served; activations
        # here stay within the node's burst of limits.ACTIVATION_BURST (5): two refused, this one, 5. and 6.
        assert main(["flash", str(signed), "--node", node.address, "--trust-key", str(pa)]) == 0
        out = capsys.readouterr().out
        assert f"signed by trusted key {ida}" in out and "flashed 1 node(s)" in out
        assert (node.store / "bundles" / name / version / SIGNATURE_FILE).read_bytes() == (signed / SIGNATURE_FILE).read_bytes()
        with Coordinator([node.address]) as c:
            c.select(PLAN)
            np.testing.assert_array_equal(c.infer(x), want)
            active = _info(node.address).activation
            assert active.version == version

            # 5. a stored file changed on disk: Activate re-verifies and refuses; the active role keeps serving
            stored = node.store / "bundles" / name / version / seg
            _flip_byte(stored)
            msg = _refused(lambda: _activate(node.address, name, version, "after-disk-change"))
            assert msg.startswith(f"activate refused: bundle {name!r} version {version}: file {seg!r} was changed "
                                  "after signing") and ida in msg
            assert _info(node.address).activation == active
            np.testing.assert_array_equal(c.infer(x), want)
            # ... and the attacks replayed while a version is active change nothing either
            before = _snapshot(node.store)
            for bundle_dir in (unsigned, untrusted, changed, rewritten):
                _refused(lambda: _raw_deploy(node.address, bundle_dir, name))
            assert _snapshot(node.store) == before and _info(node.address).activation == active
            np.testing.assert_array_equal(c.infer(x), want)

        # 6. the version stored before the key was trusted, deployed again signed: its signature is stored, it activates
        older_signed = _copy(older, tmp_path / "older-signed")
        sign_bundle(older_signed, ka)
        assert _raw_deploy(node.address, older_signed, name).version == older_version
        assert (node.store / "bundles" / name / older_version / SIGNATURE_FILE).exists()
        assert _activate(node.address, name, older_version, "older-signed").activation.version == older_version
    finally:
        node.kill()
    log = node.log_path.read_text()
    assert "Traceback" not in log and "is blocked" not in log, log[-3000:]


def test_bad_trust_key_is_named_before_anything_starts(tmp_path, capsys):
    (tmp_path / "junk.pub").write_text("not a key\n")
    store = tmp_path / "store"
    assert main(["node", "serve", "--listen", "127.0.0.1:0", "--store", str(store), "--trust-key",
                 str(tmp_path / "missing.pub")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pub' does not exist" in err and not store.exists()
    assert main(["node", "serve", "--listen", "127.0.0.1:0", "--store", str(store), "--trust-key",
                 str(tmp_path / "junk.pub")]) == 1
    assert "junk.pub' is not a PEM public key" in capsys.readouterr().err and not store.exists()


# --------------------------------------------------------------------------
# a serial board behind `paradis bridge --trust-key`


@pytest.mark.slow
def test_bridge_with_trust_key_refuses_an_unsigned_bundle(bundle4, keys, tmp_path, capsys):
    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer

    (ka, pa, ida), _ = keys["a"], keys["b"]
    name = json.loads((bundle4 / "manifest.json").read_text())["model"]["name"]
    signed = _copy(bundle4, tmp_path / "signed")
    sign_bundle(signed, ka)
    with EmulatorServer(BoardEmulator(BoardConfig(board_id="mcu-s")), "pty") as board:
        # a key file that cannot be read is named before the board is opened
        assert main(["bridge", "--serial", board.url, "--listen", "127.0.0.1:0", "--store", str(tmp_path / "nostore"),
                     "--trust-key", str(tmp_path / "missing.pub")]) == 1
        assert "missing.pub' does not exist" in capsys.readouterr().err
        assert board.board.stats["requests"] == 0

        bridge = BridgeProcess(tmp_path / "bridge", board.url, node_id="bridge-s", extra_args=("--trust-key", str(pa)))
        try:
            bridge.start(60)
            assert list(_info(bridge.address).trusted_keys) == [ida]
            before = _snapshot(bridge.store)
            msg = _refused(lambda: _raw_deploy(bridge.address, bundle4, name))
            assert "is not signed" in msg and ida in msg
            # nothing stored, nothing flashed (the bridge may ping its board meanwhile)
            assert _snapshot(bridge.store) == before
            assert board.board.staging is None and board.board.active is None
            # the signed bundle is accepted
            reply = _raw_deploy(bridge.address, signed, name)
            assert reply.bundle == name and not reply.already_present
        finally:
            bridge.kill()
    assert "Traceback" not in bridge.log_path.read_text()
