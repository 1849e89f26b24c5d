"""The non-volatile flash of an emulated board: an A/B pair kept in files.

The staging slot is filled chunk by chunk and verified against its
sha256; activation swaps it in atomically, so a reset (the emulator
process killed and started again) boots the last activated partition and
an interrupted flash resumes from the bytes already written.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from firmware_bridge import protocol as P
from paradis_tf.files import atomic_write_json, fsync_dir

log = logging.getLogger("paradis.emulator")


@dataclass
class Staging:
    """The staging flash slot, filled by FLASH_CHUNK in order."""

    name: str
    size: int
    sha256: bytes
    buf: bytearray = field(default_factory=bytearray)
    verified: bool = False


class FlashStore:
    """The non-volatile flash of an emulated board, kept in a directory.

    Files: ``staging.json`` (name, size, sha256, verified) and
    ``staging.img`` (written chunk by chunk) for the staging slot;
    ``<sha256>.img`` for the active image and ``active.json`` naming it.
    Activation renames the staged image to ``<sha256>.img`` and then
    replaces ``active.json`` atomically, so a reset at any point boots
    either the old partition or the new one, never a mix. At boot the
    active image's sha256 is checked (a bootloader's integrity check); a
    corrupt one is not run.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"flash directory {self.path!r} cannot be created ({e.strerror}); "
                             "pass a writable directory") from None
        self._staging_file = None

    def _p(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _write_json(self, name: str, value: dict) -> None:
        atomic_write_json(self._p(name), value, indent=None)

    def _read_json(self, name: str) -> dict | None:
        try:
            with open(self._p(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("flash: %s is unreadable (%s); ignored", self._p(name), e)
            return None

    def boot(self) -> tuple[tuple[str, bytes, bytes] | None, Staging | None]:
        """Reads the flash after a reset: ((name, sha256, image) or None, staging or None)."""
        active = None
        meta = self._read_json("active.json")
        if meta is not None:
            try:
                sha = bytes.fromhex(meta["sha256"])
                with open(self._p(f"{meta['sha256']}.img"), "rb") as f:
                    data = f.read()
                if P.sha256(data) != sha:
                    log.error("flash: active image %s (%s) fails its sha256 check; booting without a partition",
                              meta.get("name"), meta["sha256"][:16])
                else:
                    active = (str(meta["name"]), sha, data)
            except (OSError, KeyError, ValueError) as e:
                log.error("flash: active image unreadable (%s); booting without a partition", e)
        staging = None
        meta = self._read_json("staging.json")
        if meta is not None:
            try:
                with open(self._p("staging.img"), "rb") as f:
                    buf = bytearray(f.read(int(meta["size"])))
                staging = Staging(str(meta["name"]), int(meta["size"]), bytes.fromhex(meta["sha256"]), buf)
                if meta.get("verified"):
                    staging.verified = len(buf) == staging.size and P.sha256(bytes(buf)) == staging.sha256
                    if not staging.verified:
                        log.error("flash: staged image %s fails its sha256 check; discarded", staging.name)
                        staging = None
            except (OSError, KeyError, ValueError) as e:
                log.error("flash: staging slot unreadable (%s); discarded", e)
                staging = None
        return active, staging

    def begin(self, s: Staging) -> None:
        """Erases the staging slot for a new image."""
        self.close()
        # erase first: a reset between the two steps leaves an empty slot, never
        # the old image's bytes under the new image's name
        self._staging_file = open(self._p("staging.img"), "wb")
        os.fsync(self._staging_file.fileno())
        self._write_staging_meta(s, verified=False)

    def append(self, offset: int, data: bytes) -> None:
        """Programs ``data`` at ``offset``, the end of the staged bytes (durable once this returns)."""
        if self._staging_file is None:  # the first write after a reset: go on where the staged bytes end
            self._staging_file = open(self._p("staging.img"), "r+b")
            self._staging_file.truncate(offset)
            self._staging_file.seek(offset)
        self._staging_file.write(data)
        self._staging_file.flush()
        os.fsync(self._staging_file.fileno())

    def verified(self, s: Staging) -> None:
        self.close()
        self._write_staging_meta(s, verified=True)

    def _write_staging_meta(self, s: Staging, verified: bool) -> None:
        self._write_json("staging.json", {"name": s.name, "size": s.size, "sha256": s.sha256.hex(),
                                          "verified": verified})

    def discard(self) -> None:
        """Drops the staging slot (a failed verification)."""
        self.close()
        for name in ("staging.json", "staging.img"):
            try:
                os.remove(self._p(name))
            except FileNotFoundError:
                pass

    def activate(self, s: Staging) -> None:
        """Makes the verified staged image the active one (the A/B swap)."""
        self.close()
        sha = s.sha256.hex()
        os.replace(self._p("staging.img"), self._p(f"{sha}.img"))
        fsync_dir(self.path)
        self._write_json("active.json", {"name": s.name, "sha256": sha})
        self.discard()
        for name in os.listdir(self.path):  # the previous image: its slot is the next staging slot
            if name.endswith(".img") and name != f"{sha}.img" and name != "staging.img":
                os.remove(self._p(name))

    def close(self) -> None:
        if self._staging_file is not None:
            self._staging_file.close()
            self._staging_file = None
