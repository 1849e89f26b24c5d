"""A node's on-disk bundle store and its persisted activation state.

Layout under ``--store DIR``::

    bundles/<name>/<version>/manifest.json, switches/...   (one dir per version)
    bundles/<name>/<version>/.deploy.json                  (deploy time, bytes)
    tmp/<upload-id>/                                       (uploads in progress)
    state.json                                             (last activation)

An upload is written under ``tmp/``, every file's size and sha256 checked,
the manifest checked against the files it names, and only then renamed to
``bundles/<name>/<version>`` in one ``os.rename``: an interrupted or corrupt
upload never replaces (or half-writes) a stored version. ``version`` is the
first 16 hex digits of sha256(manifest.json), so the same bundle deployed
twice is one version. The newest ``keep`` versions of a bundle are kept, and
never the active one is removed.

Before the rename, every ``.tflite`` of the upload is loaded by the store's
``check_models`` hook (the node's interpreter, with its flatbuffer verifier;
TFLM for a serial board), so a file whose sha256 matches but which is no
model is refused and never stored. Redeploying a stored version checks the
stored files against the manifest and replaces the version with the
verified upload when any differs (`Upload.repaired`).

All versions of all bundles share one quota (``quota_bytes``; by default
what the store holds at start plus a quarter of the free disk space under
it; 0: none). An upload reserves its declared bytes when it begins and
releases them when it is committed or aborted, so concurrent uploads cannot
each pass a check made before the others wrote; one that does not fit is
refused with `StoreQuotaError` before anything is written.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from paradis_tf import files
from paradis_tf.mesh.errors import DeployError
from paradis_tf.mesh.signing import SIGNATURE_FILE

__all__ = [
    "BundleStore", "Upload", "VersionInfo", "MAX_BUNDLE_BYTES", "ModelCheck", "StoreQuotaError", "DEFAULT_QUOTA_SHARE",
    "default_quota_bytes",
]

MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_FILES = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_META = ".deploy.json"
# Without --store-quota-mb the store may grow by this share of the disk space free when the node starts.
DEFAULT_QUOTA_SHARE = 0.25

ModelCheck = Callable[[Sequence[tuple[str, Path]]], None]
"""Checks an upload's models before its version is committed: called (off the event loop) with
(path in the bundle, file on disk) for every ``.tflite`` of the upload; raises `DeployError` naming the
first file that does not load."""


class StoreQuotaError(DeployError):
    """An upload that does not fit the store's quota (the node answers RESOURCE_EXHAUSTED)."""


def default_quota_bytes(root: str | os.PathLike, stored: int) -> int:
    """The quota when none is given: ``stored`` bytes plus `DEFAULT_QUOTA_SHARE` of the free space under ``root``."""
    st = os.statvfs(root)
    return int(stored) + int(st.f_bavail * st.f_frsize * DEFAULT_QUOTA_SHARE)


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


def version_of(manifest_sha256: str) -> str:
    return manifest_sha256[:16]


def check_name(name: str, what: str = "bundle name") -> str:
    if not _NAME.match(name or ""):
        shown = repr(name) if len(name or "") <= 64 else f"{name[:32]!r}... ({len(name)} characters)"
        raise DeployError(f"invalid {what} {shown} (letters, digits, '.', '_', '-'; at most 128)")
    return name


def check_relpath(path: str) -> str:
    try:
        files.check_relpath(path, "file path in bundle")
    except files.PathError as e:
        raise DeployError(str(e)) from None
    if path.split("/")[-1] == _META:
        raise DeployError(f"file name {path!r} is reserved")
    return path


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    path: Path
    deployed_unix_ms: int
    bytes: int
    plans: tuple[str, ...]


@dataclass
class _FileState:
    path: str
    size: int
    sha256: str
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    handle: Any = None


class Upload:
    """One bundle upload in progress (driven by the Deploy handler).

    Call `add_chunk` for each chunk, then `commit`; `abort` (or a failed
    commit) removes everything written.
    """

    def __init__(self, store: "BundleStore", name: str, manifest_sha256: str, files: list[tuple[str, int, str]]):
        self.store = store
        self.name = check_name(name)
        if not _HEX64.match(manifest_sha256 or ""):
            raise DeployError(f"manifest sha256 {manifest_sha256!r} is not 64 lower-case hex digits")
        if not files:
            raise DeployError("deploy lists no files")
        if len(files) > MAX_FILES:
            raise DeployError(f"deploy lists {len(files)} files, more than the {MAX_FILES} allowed")
        seen: set[str] = set()
        self.files: list[_FileState] = []
        total = 0
        for path, size, sha in files:
            check_relpath(path)
            if path in seen:
                raise DeployError(f"file {path!r} is listed twice")
            if not _HEX64.match(sha or ""):
                raise DeployError(f"sha256 {sha!r} of {path!r} is not 64 lower-case hex digits")
            seen.add(path)
            total += int(size)
            self.files.append(_FileState(path, int(size), sha))
        if "manifest.json" not in seen:
            raise DeployError("deploy does not include manifest.json")
        manifest = next(f for f in self.files if f.path == "manifest.json")
        if manifest.sha256 != manifest_sha256:
            raise DeployError("manifest sha256 in the deploy header disagrees with the file list")
        if total > MAX_BUNDLE_BYTES:
            raise DeployError(f"bundle of {total} bytes exceeds the {MAX_BUNDLE_BYTES} allowed")
        self.total = total
        self.manifest_sha256 = manifest_sha256
        self.version = version_of(manifest_sha256)
        self.tmp = store.root / "tmp" / uuid.uuid4().hex
        self.tmp.mkdir(parents=True)
        self._done = False
        # stored files of this version that failed their sha256 and were replaced by this upload
        self.repaired: list[str] = []
        # versions of this bundle removed at begin to make room (the commit would have pruned them)
        self.pruned: list[str] = []

    def add_chunk(self, file_index: int, offset: int, data: bytes) -> None:
        if not 0 <= file_index < len(self.files):
            raise DeployError(f"chunk names file index {file_index}, but the deploy lists {len(self.files)} files")
        f = self.files[file_index]
        if offset != f.received:
            raise DeployError(f"chunk of {f.path!r} at offset {offset}, expected offset {f.received} (chunks must be in order)")
        if f.received + len(data) > f.size:
            raise DeployError(f"{f.path!r} is longer than its declared {f.size} bytes")
        if f.handle is None:
            target = self.tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            f.handle = open(target, "wb")
        f.handle.write(data)
        f.hasher.update(data)
        f.received += len(data)

    def commit(self, check_signature: Callable[[Path], None] | None = None) -> tuple[VersionInfo, bool]:
        """Verifies every file, the manifest, the signature and the models, then renames into place.

        ``check_signature`` (the node's trusted keys, `paradis_tf.mesh.signing`)
        is called with the upload's directory once every file is complete and
        matches its declared sha256, before the manifest is parsed or any model
        loaded; what it raises refuses the upload.

        A version stored already stays if its files still match the manifest;
        if any differs or is missing, the verified upload replaces it
        (`repaired` names the files).

        Returns:
            (the stored version, whether it was already present intact).
        """
        try:
            for f in self.files:
                if f.handle is None and f.size == 0:
                    target = self.tmp / f.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(b"")
                if f.handle is not None:
                    f.handle.flush()
                    os.fsync(f.handle.fileno())
                    f.handle.close()
                    f.handle = None
                if f.received != f.size:
                    raise DeployError(f"truncated upload: {f.path!r} has {f.received} of {f.size} bytes")
                got = f.hasher.hexdigest()
                if got != f.sha256:
                    raise DeployError(f"sha256 mismatch for {f.path!r}: received {got}, expected {f.sha256}")
            if check_signature is not None:  # first: nothing else of an upload counts before it is known to be signed
                check_signature(self.tmp)
            plans = _check_manifest(self.tmp, {f.path: f.sha256 for f in self.files})
            models = [(f.path, self.tmp / f.path) for f in self.files if f.path.endswith(".tflite")]
            if models and self.store.check_models is not None:
                self.store.check_models(models)
            meta = {"deployed_unix_ms": int(time.time() * 1000), "bytes": self.total, "plans": plans}
            (self.tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
            present = self._place(meta)
            self._done = True
            self.store._release(self)
            return self.store.info(self.name, self.version), present
        finally:
            if not self._done:
                self.abort()

    def _place(self, meta: dict) -> bool:
        """Moves the verified upload to its version directory; True if an intact copy was there."""
        final = self.store.root / "bundles" / self.name / self.version
        final.parent.mkdir(parents=True, exist_ok=True)
        files.fsync_dir(self.tmp)
        damaged = _damaged(final, self.files) if final.is_dir() else []  # hashing takes time: not under the lock
        # Renames only under the lock: one upload at a time decides between
        # "new", "repair" and "present", so two commits of one version
        # cannot both rename into place.
        old: Path | None = None
        with self.store._lock:
            present = final.is_dir() and not damaged  # intact, or just placed by another upload verified like this one
            if not final.is_dir():
                os.rename(self.tmp, final)
            elif damaged:
                old = _replace_dir(final, self.tmp)
        if present:
            shutil.rmtree(self.tmp, ignore_errors=True)
            # Redeploying a stored version makes it the newest again.
            m = json.loads((final / _META).read_text(encoding="utf-8"))
            m["deployed_unix_ms"] = meta["deployed_unix_ms"]
            files.atomic_write(final / _META, json.dumps(m).encode())
            return True
        files.fsync_dir(final.parent)
        if old is not None:
            self.repaired = damaged
            shutil.rmtree(old, ignore_errors=True)
        return False

    def abort(self) -> None:
        for f in self.files:
            if f.handle is not None:
                try:
                    f.handle.close()
                except OSError:
                    pass  # a full disk fails the final flush; the file is removed with the rest
                f.handle = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._done = True
        self.store._release(self)


def _damaged(stored: Path, expected: list[_FileState]) -> list[str]:
    """Files of a stored version that are missing or differ from their sha256 (its metadata included)."""
    bad = []
    for f in expected:
        h = hashlib.sha256()
        try:
            with open(stored / f.path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            bad.append(f.path)
            continue
        if h.hexdigest() != f.sha256:
            bad.append(f.path)
    try:
        json.loads((stored / _META).read_text(encoding="utf-8"))["deployed_unix_ms"]
    except (OSError, ValueError, KeyError, TypeError):
        bad.append(_META)
    return bad


def _replace_dir(final: Path, new: Path) -> Path:
    """Puts directory ``new`` at ``final``; returns where the old ``final`` went (to be removed).

    With the kernel's atomic exchange (renameat2) there is no moment without
    a version at ``final``; elsewhere two renames leave one, never a
    half-written version. Interpreters already loaded from the old files
    hold the model in memory and keep running.
    """
    if _exchange(new, final):
        return new  # the exchange left the old version where the upload was
    old = new.with_name(new.name + ".old")
    os.rename(final, old)
    os.rename(new, final)
    return old


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _check_manifest(root: Path, received: dict[str, str]) -> list[str]:
    """Validates the uploaded manifest and that every int8 segment file came.

    A node keeps only manifest.json and the int8 segment files (no C arrays
    or float partitions): those are checked against the manifest's sha256.
    """
    from paradis_tf.bundle import BundleError, load

    try:
        bundle = load(root, verify=False)
    except BundleError as e:
        raise DeployError(f"invalid manifest: {e}".replace(str(root) + "/", "")) from None
    for rel, sha in received.items():
        if rel in ("manifest.json", SIGNATURE_FILE):  # the signature signs the manifest: it is not listed there
            continue
        entry = bundle.files.get(rel)
        if entry is None:
            raise DeployError(f"{rel!r} is not a file of this bundle (not listed in manifest.json)")
        if entry.sha256 != sha:
            raise DeployError(f"{rel!r} does not match the sha256 in manifest.json")
    for name, plan in bundle.plans.items():
        for dev in plan.devices:
            for seg in dev.segments:
                if seg.file not in received:
                    raise DeployError(f"plan {name!r}: segment file {seg.file!r} was not uploaded")
    return sorted(bundle.plans)


class BundleStore:
    """Bundles stored on one node, with versions, plus its activation state.

    Args:
        root: the store directory.
        keep: versions kept per bundle (at least 2).
        quota_bytes: bytes all stored versions may take together, uploads in
            progress included; None: `default_quota_bytes`; 0: no quota.
        check_models: loads an upload's models before it is committed
            (`ModelCheck`); None: not checked.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 3, quota_bytes: int | None = None,
                 check_models: ModelCheck | None = None):
        self.root = Path(root)
        self.keep = max(2, int(keep))
        (self.root / "bundles").mkdir(parents=True, exist_ok=True)
        # Uploads interrupted by a crash or kill are garbage now.
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.check_models = check_models
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # upload id -> declared bytes, while it is in progress
        if quota_bytes is None:
            quota_bytes = default_quota_bytes(self.root, self.used_bytes())
        if quota_bytes < 0:
            raise ValueError(f"Expected a store quota of 0 (none) or more bytes. Received quota_bytes={quota_bytes}.")
        self.quota_bytes = int(quota_bytes)

    def begin(self, name: str, manifest_sha256: str, files: list[tuple[str, int, str]],
              protect: Collection[str] = ()) -> Upload:
        """Starts an upload and reserves its declared bytes against the quota.

        A version stored already costs nothing more. When the upload does not
        fit, the versions of this bundle its commit would prune anyway (beyond
        the newest ``keep - 1``, except ``protect``) are removed first if that
        makes room (`Upload.pruned`).

        Raises:
            DeployError: an invalid header.
            StoreQuotaError: the upload does not fit the quota.
        """
        upload = Upload(self, name, manifest_sha256, files)
        try:
            self._reserve(upload, set(protect))
        except BaseException:
            upload.abort()
            raise
        return upload

    def used_bytes(self) -> int:
        """Bytes of all stored versions (as declared and verified when each was deployed)."""
        return sum(v.bytes for name in self.names() for v in self.versions(name))

    def reserved_bytes(self) -> int:
        """Bytes reserved by uploads in progress."""
        with self._lock:
            return sum(self._reserved.values())

    def _reserve(self, upload: Upload, protect: set[str]) -> None:
        with self._lock:
            if (self.root / "bundles" / upload.name / upload.version).is_dir():
                return  # a redeploy (or repair) of a stored version takes no more room
            if self.quota_bytes:
                stored, pending = self.used_bytes(), sum(self._reserved.values())
                if stored + pending + upload.total > self.quota_bytes:
                    doomed = [v for v in self.versions(upload.name)[self.keep - 1:] if v.version not in protect]
                    if not doomed or stored - sum(v.bytes for v in doomed) + pending + upload.total > self.quota_bytes:
                        raise StoreQuotaError(
                            f"store quota exceeded: bundle {upload.name!r} version {upload.version} needs "
                            f"{_mb(upload.total)} ({upload.total} bytes), the store holds {_mb(stored)} and uploads in "
                            f"progress reserve {_mb(pending)} of its {_mb(self.quota_bytes)} quota; remove bundle "
                            f"versions no longer needed from {self.root / 'bundles'} (never the active one) or raise "
                            "--store-quota-mb"
                        )
                    for v in doomed:
                        shutil.rmtree(v.path, ignore_errors=True)
                        upload.pruned.append(v.version)
            self._reserved[upload.tmp.name] = upload.total

    def _release(self, upload: Upload) -> None:
        with self._lock:
            self._reserved.pop(upload.tmp.name, None)

    def info(self, name: str, version: str) -> VersionInfo:
        path = self.root / "bundles" / name / version
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
        return VersionInfo(name, version, path, int(meta["deployed_unix_ms"]), int(meta["bytes"]), tuple(meta["plans"]))

    def versions(self, name: str) -> list[VersionInfo]:
        """Stored versions of a bundle, newest first."""
        d = self.root / "bundles" / name
        out = []
        if d.is_dir():
            for v in d.iterdir():
                try:
                    out.append(self.info(name, v.name))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being removed or replaced right now, or damaged (a redeploy repairs it)
        out.sort(key=lambda i: (i.deployed_unix_ms, i.version), reverse=True)
        return out

    def names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "bundles").iterdir() if p.is_dir())

    def resolve(self, name: str, version: str = "") -> VersionInfo:
        """The stored version (newest if ``version`` is empty).

        Raises:
            DeployError: no such bundle or version.
        """
        check_name(name)
        versions = self.versions(name)
        if not versions:
            stored = ", ".join(self.names()) or "none"
            raise DeployError(f"bundle {name!r} is not stored on this node (stored: {stored}); deploy it first")
        if not version:
            return versions[0]
        for v in versions:
            if v.version == version:
                return v
        raise DeployError(
            f"bundle {name!r} has no version {version!r} (stored: {', '.join(v.version for v in versions)})"
        )

    def prune(self, name: str, protect: set[str]) -> list[str]:
        """Removes versions beyond the newest ``keep``, except ``protect``."""
        removed = []
        for v in self.versions(name)[self.keep:]:
            if v.version in protect:
                continue
            shutil.rmtree(v.path, ignore_errors=True)
            removed.append(v.version)
        return removed

    # activation state -------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def save_state(self, state: dict) -> None:
        files.atomic_write(self.state_path, json.dumps(state, indent=1, sort_keys=True).encode())

    def load_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None
