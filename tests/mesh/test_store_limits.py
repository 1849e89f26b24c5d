"""The node's bundle store under pressure: a quota across all bundles (uploads in
progress reserve their bytes), models loaded by the interpreter before a version
counts, redeploying repairs a stored version whose files fail their sha256, and a
full disk answers RESOURCE_EXHAUSTED. Unit tests on `BundleStore`, then real node
daemons (and one serial bridge) driven by raw gRPC calls."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from paradis_tf.bundle import load
from paradis_tf.mesh import limits, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.coordinator import _manifest_files
from paradis_tf.mesh.errors import DeployError
from paradis_tf.mesh.local import BridgeProcess, NodeProcess
from paradis_tf.mesh.store import BundleStore, StoreQuotaError, default_quota_bytes, version_of
from paradis_tf.quant import QTensor, convert
from paradis_tf.runtime import LocalRunner, load_interpreter
from paradis_tf.runtime.backends import BackendError

PLAN = "1x0.25"


# --- bundles ----------------------------------------------------------------
def _files(bundle_dir: Path) -> list[tuple[str, int, str]]:
    return _manifest_files(load(bundle_dir, verify=False))


def _size(bundle_dir: Path) -> int:
    return sum(s for _, s, _ in _files(bundle_dir))


def _manifest_sha(bundle_dir: Path) -> str:
    return hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()


def _segment(bundle_dir: Path, plan: str = PLAN) -> str:
    return load(bundle_dir, verify=False).plan(plan).devices[0].segments[0].file


def _variant(src: Path, dst: Path, *, newlines: int = 0, random_model: str | None = None) -> Path:
    """A copy of bundle ``src``: another version (the manifest ends in ``newlines`` more newlines), or with
    ``random_model`` replaced by random bytes of its size whose sha256 the manifest then lists."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    if random_model is not None:
        data = np.random.default_rng(7).integers(0, 256, manifest["files"][random_model]["size"], dtype=np.uint8).tobytes()
        (dst / random_model).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        manifest["files"][random_model]["sha256"] = sha
        for plan in manifest["plans"].values():
            for dev in plan["devices"]:
                for seg in dev["segments"]:
                    if seg["file"] == random_model:
                        seg["sha256"] = sha
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n" * newlines)
    return dst


def _upload(store: BundleStore, bundle_dir: Path, name: str = "tiny", protect=()):
    """Begins, sends and commits ``bundle_dir`` to ``store``: (upload, version info, already present)."""
    files = _files(bundle_dir)
    upload = store.begin(name, _manifest_sha(bundle_dir), files, protect)
    for i, (path, _, _) in enumerate(files):
        upload.add_chunk(i, 0, (bundle_dir / path).read_bytes())
    info, present = upload.commit()
    return upload, info, present


def _interpreter_check(models) -> None:
    """The node's check (`NodeServicer.check_models`) without a node: load every model with LiteRT."""
    for rel, path in models:
        try:
            load_interpreter(path.read_bytes(), "litert")
        except BackendError as e:
            raise DeployError(f"{rel!r} does not load: {e}") from None


# --- unit: BundleStore ------------------------------------------------------
def _header(name: str, size: int) -> tuple[str, list[tuple[str, int, str]]]:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return sha, [("manifest.json", size, sha)]


def test_uploads_in_progress_reserve_their_declared_bytes(tmp_path):
    store = BundleStore(tmp_path / "store", quota_bytes=1000)
    first = store.begin("first", *_header("first", 600))
    assert store.reserved_bytes() == 600
    with pytest.raises(StoreQuotaError) as e:
        store.begin("second", *_header("second", 600))
    msg = str(e.value)
    for text in ("bundle 'second'", "(600 bytes)", "the store holds 0.0 MB", "uploads in progress reserve 0.0 MB",
                 "quota", str(tmp_path / "store" / "bundles"), "--store-quota-mb"):
        assert text in msg, (text, msg)
    assert [p.name for p in (tmp_path / "store" / "tmp").iterdir()] == [first.tmp.name]  # the refused one left nothing
    first.abort()
    assert store.reserved_bytes() == 0
    second = store.begin("second", *_header("second", 600))  # the room came back with the abort
    second.abort()
    unlimited = BundleStore(tmp_path / "free", quota_bytes=0)
    unlimited.begin("huge", *_header("huge", 1 << 30)).abort()
    with pytest.raises(ValueError, match="quota_bytes=-1"):
        BundleStore(tmp_path / "neg", quota_bytes=-1)


def test_default_quota_is_what_is_stored_plus_a_quarter_of_the_free_space(tmp_path, bundle4):
    root = tmp_path / "store"
    _upload(BundleStore(root, quota_bytes=0), bundle4)
    store = BundleStore(root)
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    assert store.used_bytes() == _size(bundle4)
    assert abs(store.quota_bytes - (_size(bundle4) + free // 4)) < max(free // 100, 1 << 20)
    assert abs(default_quota_bytes(root, 0) - free // 4) < max(free // 100, 1 << 20)


def test_a_stored_version_costs_nothing_and_versions_the_commit_would_prune_make_room(tmp_path, bundle4):
    v1, v2, v3 = (_variant(bundle4, tmp_path / f"v{i}", newlines=i) for i in (1, 2, 3))
    store = BundleStore(tmp_path / "store", keep=2, quota_bytes=int(2.5 * _size(v3)))
    for v in (v1, v2):
        _, _, present = _upload(store, v)
        assert not present
    assert store.used_bytes() == _size(v1) + _size(v2)
    # a redeploy of a stored version reserves nothing, though the store is nearly full
    again = store.begin("tiny", _manifest_sha(v2), _files(v2))
    assert store.reserved_bytes() == 0
    again.abort()
    _, info, present = _upload(store, v2)
    assert present and info.version == version_of(_manifest_sha(v2))
    ver = {v: version_of(_manifest_sha(v)) for v in (v1, v2, v3)}
    # v1 is the oldest beyond keep - 1, but protected (a loaded activation): no room, nothing removed
    with pytest.raises(StoreQuotaError, match=f"bundle 'tiny' version {ver[v3]} needs"):
        store.begin("tiny", _manifest_sha(v3), _files(v3), protect={ver[v1]})
    assert [v.version for v in store.versions("tiny")] == [ver[v2], ver[v1]]
    # unprotected, v1 would be pruned by this commit anyway: it goes first and v3 fits
    upload, _, _ = _upload(store, v3)
    assert upload.pruned == [ver[v1]]
    assert [v.version for v in store.versions("tiny")] == [ver[v3], ver[v2]]
    assert store.used_bytes() == _size(v2) + _size(v3) <= store.quota_bytes
    assert store.reserved_bytes() == 0


def test_models_are_loaded_before_the_version_is_committed(tmp_path, bundle4):
    seen = []

    def check(models):
        seen.extend(rel for rel, _ in models)
        _interpreter_check(models)

    store = BundleStore(tmp_path / "store", quota_bytes=0, check_models=check)
    _upload(store, bundle4)
    assert sorted(seen) == sorted(p for p, _, _ in _files(bundle4) if p.endswith(".tflite"))
    bad = _variant(bundle4, tmp_path / "bad", random_model=_segment(bundle4))
    with pytest.raises(DeployError, match=f"{_segment(bundle4)!r} does not load: .*not a valid Flatbuffer"):
        _upload(store, bad)
    assert [v.version for v in store.versions("tiny")] == [version_of(_manifest_sha(bundle4))]
    assert not any((tmp_path / "store" / "tmp").iterdir()) and store.reserved_bytes() == 0


def test_redeploy_replaces_a_stored_version_whose_files_fail_their_sha256(tmp_path, bundle4):
    store = BundleStore(tmp_path / "store", quota_bytes=0)
    _, info, _ = _upload(store, bundle4)
    seg = _segment(bundle4)
    other = next(p for p, _, _ in _files(bundle4) if p.endswith(".tflite") and p != seg)
    (info.path / seg).write_bytes(b"\0" * 64)
    (info.path / other).unlink()
    upload, info2, present = _upload(store, bundle4)
    assert not present and sorted(upload.repaired) == sorted([seg, other])
    assert info2.path == info.path
    for path, _, sha in _files(bundle4):
        assert hashlib.sha256((info.path / path).read_bytes()).hexdigest() == sha, path
    upload, _, present = _upload(store, bundle4)  # intact now: nothing to repair
    assert present and upload.repaired == []
    assert not any((tmp_path / "store" / "tmp").iterdir())


# --- real node daemons ----------------------------------------------------------
def _stub(address: str):
    ch = grpc.insecure_channel(address, options=limits.CHANNEL_OPTIONS)
    return ch, mesh_pb2_grpc.NodeStub(ch)


class _Gate:
    """Opens once each of ``n`` deploy streams has sent its DeployBegin or ended (a refused one stops early)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._in: set[str] = set()
        self._cv = threading.Condition()

    def arrive(self, who: str, wait: bool = True) -> None:
        with self._cv:
            self._in.add(who)
            self._cv.notify_all()
            if wait:
                self._cv.wait_for(lambda: len(self._in) >= self._n, timeout=60)


def _deploy_stream(bundle_dir: Path, name: str = "tiny", gate: _Gate | None = None):
    files = _files(bundle_dir)
    yield mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(
        bundle=name, manifest_sha256=_manifest_sha(bundle_dir),
        files=[mesh_pb2.FileEntry(path=p, size=s, sha256=h) for p, s, h in files]))
    if gate is not None:  # every stream has sent its DeployBegin before any sends a byte
        gate.arrive(name)
    for i, (path, _, _) in enumerate(files):
        data = (bundle_dir / path).read_bytes()
        for off in range(0, len(data), 4096):
            yield mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=off, data=data[off:off + 4096]))
    yield mesh_pb2.DeployRequest(commit=mesh_pb2.DeployCommit())


def _stored(stub) -> dict[str, list[str]]:
    info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
    return {b.name: [v.version for v in b.versions] for b in info.bundles}


def _activate(stub, address: str, activation_id: str = "a1"):
    return stub.Activate(mesh_pb2.ActivateRequest(bundle="tiny", plan=PLAN, role=0, peers={0: address},
                                                  activation_id=activation_id), timeout=60)


def _run_matches_local(stub, bundle_dir: Path, x: np.ndarray, rid: str) -> None:
    from paradis_tf.bundle import SegmentRef
    from paradis_tf.runtime.program import fuse

    runner = LocalRunner(bundle_dir, PLAN)
    spec = runner.plan.devices[0].segments[0]
    q = convert(QTensor.from_float(x), spec.inputs[0].tensor.quant)
    reply = stub.Run(mesh_pb2.RunRequest(request_id=rid, plan=PLAN, input=tensors.encode_qtensor(q)), timeout=10)
    out = tensors.decode_qtensor(reply.outputs[0].tensor, spec.output)
    np.testing.assert_array_equal(fuse(runner.plan, {SegmentRef(0, 0): out}), runner.predict(x))


@pytest.fixture
def start_node(tmp_path):
    """start_node(*flags) -> a started NodeProcess (TensorFlow blocked), killed at teardown."""
    started: list[NodeProcess] = []

    def start(*flags: str, cls=NodeProcess) -> NodeProcess:
        n = cls(tmp_path / f"node{len(started)}" / "store", node_id=f"n{len(started)}", block_tensorflow=True,
                extra_args=flags)
        started.append(n)
        n.start()
        return n

    yield start
    for n in started:
        n.kill()


def _quota_flag(quota_bytes: int) -> tuple[str, str]:
    return "--store-quota-mb", repr(quota_bytes / 2**20)  # exact: a power-of-two division round-trips


def test_quota_refusal_leaves_store_and_activation_and_the_node_serves(start_node, bundle4, bundle_sync, images):
    size4, size_sync = _size(bundle4), _size(bundle_sync)
    quota = size4 + size_sync // 2
    node = start_node(*_quota_flag(quota))
    ch, stub = _stub(node.address)
    with ch:
        stub.Deploy(_deploy_stream(bundle4), timeout=60)
        act = _activate(stub, node.address).activation
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert info.store_quota_bytes == quota and info.store_bytes == size4
        before = _stored(stub)
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(_deploy_stream(bundle_sync, name="big"), timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for text in ("bundle 'big'", f"({size_sync} bytes)", "the store holds", f"{quota / 2**20:.1f} MB quota",
                     "remove bundle versions", "--store-quota-mb"):
            assert text in e.value.details(), (text, e.value.details())
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert _stored(stub) == before and info.store_bytes == size4 and info.activation == act
        assert not any((node.store / "tmp").iterdir())
        _run_matches_local(stub, bundle4, images[:3], "after-quota")


def _stored_file_bytes(root: Path) -> int:
    """Bytes of bundle files under bundles/ and tmp/ (what the quota counts), tolerant of files vanishing."""
    total = 0
    for sub in ("bundles", "tmp"):
        for dirpath, _, names in os.walk(root / sub):
            for n in names:
                if n != ".deploy.json":
                    try:
                        total += os.stat(os.path.join(dirpath, n)).st_size
                    except FileNotFoundError:
                        pass
    return total


def test_six_concurrent_deploys_over_the_quota_never_overfill_the_store(start_node, bundle4):
    size = _size(bundle4)
    quota = 3 * size + size // 2  # room for three
    node = start_node(*_quota_flag(quota))
    gate = _Gate(6)
    results: dict[str, grpc.StatusCode] = {}
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], _stored_file_bytes(node.store))

    def deploy(name: str) -> None:
        ch, stub = _stub(node.address)
        with ch:
            try:
                stub.Deploy(_deploy_stream(bundle4, name=name, gate=gate), timeout=60)
                results[name] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                results[name] = e.code()
            finally:
                gate.arrive(name, wait=False)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=deploy, args=(f"b{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    sampler.join()
    codes = sorted(results.values(), key=lambda c: c.name)
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3, results
    assert 0 < peak[0] <= quota
    ch, stub = _stub(node.address)
    with ch:
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert info.store_bytes == 3 * size <= info.store_quota_bytes == quota
        assert sorted(b.name for b in info.bundles) == sorted(n for n, c in results.items() if c == grpc.StatusCode.OK)
    assert not any((node.store / "tmp").iterdir())


def test_a_random_bytes_model_with_a_matching_sha256_is_refused(start_node, bundle4, images, tmp_path):
    seg = _segment(bundle4)
    bad = _variant(bundle4, tmp_path / "random", random_model=seg)
    node = start_node()
    ch, stub = _stub(node.address)
    with ch:
        stub.Deploy(_deploy_stream(bundle4), timeout=60)
        act = _activate(stub, node.address).activation
        before = _stored(stub)
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(_deploy_stream(bad), timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{seg!r} is not a model litert can load" in e.value.details(), e.value.details()
        assert "not a valid Flatbuffer" in e.value.details()
        assert _stored(stub) == before and stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).activation == act
        assert not any((node.store / "tmp").iterdir())
        _run_matches_local(stub, bundle4, images[:3], "after-random")


def test_redeploy_repairs_a_corrupted_stored_file(start_node, bundle4, images):
    node = start_node()
    ch, stub = _stub(node.address)
    with ch:
        first = stub.Deploy(_deploy_stream(bundle4), timeout=60)
        _activate(stub, node.address, "before")
        stored = node.store / "bundles" / "tiny" / first.version / _segment(bundle4)
        stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])  # the disk lost half of it
        _run_matches_local(stub, bundle4, images[:2], "loaded")  # the interpreter holds the model in memory
        with pytest.raises(grpc.RpcError) as e:
            _activate(stub, node.address, "reload")
        assert e.value.code() != grpc.StatusCode.OK and "segment" in e.value.details()
        again = stub.Deploy(_deploy_stream(bundle4), timeout=60)
        assert again.version == first.version and not again.already_present  # repaired, not "already present"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == dict((p, h) for p, _, h in _files(bundle4))[
            _segment(bundle4)]
        assert f"repaired tiny version {first.version}" in node.log_path.read_text()
        assert _activate(stub, node.address, "reload").activation.activation_id == "reload"
        _run_matches_local(stub, bundle4, images[:4], "repaired")
        assert stub.Deploy(_deploy_stream(bundle4), timeout=60).already_present  # intact now


def _user_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class _SmallDiskNode(NodeProcess):
    """A node whose store is a tmpfs of ``disk_bytes`` (a user and mount namespace of its own)."""

    disk_bytes = 16 * 1024

    def _command(self) -> list[str]:
        mount = f'mount -t tmpfs -o size={self.disk_bytes} paradis-test "$0" && exec "$@"'
        return ["unshare", "-rm", "sh", "-c", mount, str(self.store), *super()._command()]


@pytest.mark.skipif(not _user_namespaces(), reason="needs unprivileged user namespaces to mount a small tmpfs")
def test_a_full_disk_answers_resource_exhausted(start_node, bundle4, bundle_sync):
    assert _size(bundle4) > _SmallDiskNode.disk_bytes
    node = start_node("--store-quota-mb", "0", cls=_SmallDiskNode)
    ch, stub = _stub(node.address)
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            stub.Deploy(_deploy_stream(bundle4), timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "is full" in e.value.details() and "No space left on device" in e.value.details(), e.value.details()
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)  # still serving, nothing stored, nothing left behind
        assert not info.bundles and info.store_quota_bytes == 0
        seen_by_node = Path(f"/proc/{node.pid}/root") / node.store.relative_to("/")  # inside its mount namespace
        assert not (node.store / "bundles").exists()  # the store really is the node's own small disk
        assert (seen_by_node / "bundles").is_dir() and not any((seen_by_node / "tmp").iterdir())


def test_a_serial_bridge_checks_models_with_tflm(tmp_path, bundle4):
    from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
    from firmware_bridge.emulator import EmulatorServer

    seg = _segment(bundle4)
    bad = _variant(bundle4, tmp_path / "random", random_model=seg)
    with EmulatorServer(BoardEmulator(BoardConfig(board_id="mcu-q")), "pty") as board:
        bridge = BridgeProcess(tmp_path / "bridge" / "store", board.url, node_id="bridge-q")
        bridge.start()
        try:
            ch, stub = _stub(bridge.address)
            with ch:
                with pytest.raises(grpc.RpcError) as e:
                    stub.Deploy(_deploy_stream(bad), timeout=60)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert f"{seg!r} is not a model TFLM (the board's runtime) can load" in e.value.details(), \
                    e.value.details()
                assert not stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).bundles
                assert not stub.Deploy(_deploy_stream(bundle4), timeout=60).already_present
        finally:
            bridge.kill()
