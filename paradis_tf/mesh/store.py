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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paradis_tf import files
from paradis_tf.mesh.errors import DeployError

__all__ = ["BundleStore", "Upload", "VersionInfo", "MAX_BUNDLE_BYTES"]

MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_FILES = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_META = ".deploy.json"


def version_of(manifest_sha256: str) -> str:
    return manifest_sha256[:16]


def check_name(name: str, what: str = "bundle name") -> str:
    if not _NAME.match(name or ""):
        raise DeployError(f"invalid {what} {name!r} (letters, digits, '.', '_', '-'; at most 128)")
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

    def commit(self) -> tuple[VersionInfo, bool]:
        """Verifies every file and the manifest, then renames into place.

        Returns:
            (the stored version, whether it was already present).
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
            plans = _check_manifest(self.tmp, {f.path: f.sha256 for f in self.files})
            meta = {"deployed_unix_ms": int(time.time() * 1000), "bytes": self.total, "plans": plans}
            (self.tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
            final = self.store.root / "bundles" / self.name / self.version
            final.parent.mkdir(parents=True, exist_ok=True)
            present = final.exists()
            if present:
                shutil.rmtree(self.tmp, ignore_errors=True)
                # Redeploying a stored version makes it the newest again.
                m = json.loads((final / _META).read_text(encoding="utf-8"))
                m["deployed_unix_ms"] = meta["deployed_unix_ms"]
                files.atomic_write(final / _META, json.dumps(m).encode())
            else:
                files.fsync_dir(self.tmp)
                os.rename(self.tmp, final)
                files.fsync_dir(final.parent)
            self._done = True
            return self.store.info(self.name, self.version), present
        finally:
            if not self._done:
                self.abort()

    def abort(self) -> None:
        for f in self.files:
            if f.handle is not None:
                f.handle.close()
                f.handle = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._done = True


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
        if rel == "manifest.json":
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
    """Bundles stored on one node, with versions, plus its activation state."""

    def __init__(self, root: str | os.PathLike, keep: int = 3):
        self.root = Path(root)
        self.keep = max(2, int(keep))
        (self.root / "bundles").mkdir(parents=True, exist_ok=True)
        # Uploads interrupted by a crash or kill are garbage now.
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def begin(self, name: str, manifest_sha256: str, files: list[tuple[str, int, str]]) -> Upload:
        return Upload(self, name, manifest_sha256, files)

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
                if v.is_dir() and (v / _META).exists():
                    out.append(self.info(name, v.name))
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
