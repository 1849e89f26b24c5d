"""Files that survive a crash, and relative paths that stay inside their root.

One implementation for every writer in the kit (bundles, the node's store,
certificates, the board emulator's flash, ready files): `atomic_write` writes
a temporary file next to the target, fsyncs it, renames it over the target
and fsyncs the directory, so a reader sees the old file or the new one, never
a torn one, also after a power cut. `check_relpath` is the one rule for a path
that arrives from outside (a manifest, a Deploy stream).

Numpy-free and TensorFlow-free; see docs/ARCHITECTURE.md (format layer).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["PathError", "atomic_write", "atomic_write_json", "check_relpath", "fsync_dir"]


class PathError(ValueError):
    """A relative path that is malformed or would leave its root."""


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes a rename or a new entry in ``path`` durable (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replaces ``path`` with ``data`` atomically and durably.

    Args:
        path: the target file; its directory must exist.
        data: bytes, or text (written as UTF-8).
        mode: permission bits of the new file (0o600 for private keys).
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """`atomic_write` of ``obj`` as JSON, with a final newline."""
    atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def check_relpath(path: object, what: str = "file path") -> str:
    """Returns ``path`` if it is a relative, normalised, '/'-separated path inside its root.

    Raises:
        PathError: empty, absolute, with a backslash, a NUL byte, an empty,
            '.' or '..' component; the message quotes the value.
    """
    if not isinstance(path, str) or not path:
        raise PathError(f"{what} {path!r} is not a relative path (give a non-empty '/'-separated path)")
    if "\x00" in path or "\\" in path or path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
        raise PathError(
            f"{what} {path!r} must be relative, normalised, '/'-separated, without NUL bytes, "
            "and stay inside its root (no '.', '..' or empty components)"
        )
    return path
