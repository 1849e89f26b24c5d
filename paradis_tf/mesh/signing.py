"""Signed bundles: ed25519 keys, a detached signature over the manifest, and its check.

A bundle's ``manifest.json`` pins the size and sha256 of every file of the
bundle, so one signature over the manifest's exact bytes covers them all.
The signature lives next to it in ``manifest.sig`` (`SIGNATURE_FILE`)::

    {"schema": "paradis-bundle-signatures", "schema_version": 1,
     "manifest_sha256": "<64 hex digits of the manifest signed>",
     "signatures": [{"algorithm": "ed25519", "key_id": "<16 hex digits>",
                     "public_key": "<base64 of the raw 32-byte key>",
                     "signature": "<base64 of the 64-byte signature over manifest.json>"}]}

There is one entry per key: signing again with a key replaces its entry,
another key adds one. ``public_key`` tells which key made an entry; a
verifier trusts only its own copies of the public keys and looks entries up
by ``key_id``.

A **key id** is the first 16 hex digits of sha256 over the raw 32-byte
ed25519 public key (`key_id`): ``paradis keys id release.pub`` prints it,
node logs and refusals name keys by it.

`verify_bundle` accepts a bundle when an entry of a trusted key verifies
over the manifest bytes on disk AND every file the manifest lists that is
present in the directory has the manifest's size and sha256 (a node keeps
only the manifest and the int8 segment files, so absent files are not an
error here; the store and `paradis_tf.bundle.load` check those it needs).

Key files: the private key is PEM PKCS#8 (unencrypted, mode 0600), the
public key PEM SubjectPublicKeyInfo. `public_key_path` names the public key
of a private key file: ``release.key`` -> ``release.pub``, any other name
``KEY`` -> ``KEY.pub``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from paradis_tf.bundle import MANIFEST, sha256_file
from paradis_tf.bundle import load as load_bundle
from paradis_tf.files import PathError, atomic_write, atomic_write_json, check_relpath
from paradis_tf.mesh.errors import MeshError

__all__ = [
    "SIGNATURE_FILE",
    "SIGNATURE_SCHEMA",
    "ALGORITHM",
    "SignatureError",
    "KeyFileError",
    "SignResult",
    "public_key_path",
    "new_keypair",
    "load_private_key",
    "load_public_key",
    "load_trusted_keys",
    "key_id",
    "sign_bundle",
    "signature_key_ids",
    "verify_bundle",
]

SIGNATURE_FILE = "manifest.sig"
SIGNATURE_SCHEMA = "paradis-bundle-signatures"
SIGNATURE_SCHEMA_VERSION = 1
ALGORITHM = "ed25519"
# A signature file holds one small entry per key; anything bigger is not one.
MAX_SIGNATURE_FILE_BYTES = 64 * 1024


class SignatureError(MeshError):
    """A bundle without a valid signature of a trusted key (the message names the bundle and the key ids)."""


class KeyFileError(MeshError, ValueError):
    """A key file that is missing, unreadable, of the wrong kind, or that would be overwritten."""


@dataclass(frozen=True)
class SignResult:
    """What `sign_bundle` did.

    Attributes:
        path: the signature file written.
        key_id: the id of the key that signed.
        replaced: an entry of this key was there and was replaced.
        dropped: ids of other keys whose entries no longer matched the
            manifest (it changed after they signed) and were removed.
        kept: ids of other keys whose entries still verify.
    """

    path: Path
    key_id: str
    replaced: bool
    dropped: tuple[str, ...]
    kept: tuple[str, ...]


# --------------------------------------------------------------------------
# keys


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(key_path: str | os.PathLike) -> Path:
    """The public key file of a private key file: ``X.key`` -> ``X.pub``, else ``KEY`` -> ``KEY.pub``."""
    key_path = Path(key_path)
    if key_path.suffix == ".key":
        return key_path.with_suffix(".pub")
    return key_path.with_name(key_path.name + ".pub")


def new_keypair(path: str | os.PathLike) -> tuple[Path, Path]:
    """Makes an ed25519 key pair: the private key at ``path`` (mode 0600), its public key at `public_key_path`.

    Returns:
        (private key path, public key path).

    Raises:
        KeyFileError: either file exists already (nothing is overwritten).
    """
    key_path = Path(path)
    pub_path = public_key_path(key_path)
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(f"{p} exists already; refusing to overwrite a key (choose another name or remove it)")
    if pub_path == key_path:  # pragma: no cover - public_key_path always differs
        raise KeyFileError(f"{key_path}: the public key would overwrite the private key")
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pub = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write(key_path, pem, mode=0o600)
    atomic_write(pub_path, pub, mode=0o644)
    return key_path, pub_path


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {str(path)!r} does not exist (make a key pair with `paradis keys new KEY`)") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    if len(data) > 64 * 1024:
        raise KeyFileError(f"{what} {str(path)!r} is {len(data)} bytes, too big to be a PEM key")
    return data


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """Reads an ed25519 private key (PEM PKCS#8, `new_keypair`).

    Raises:
        KeyFileError: missing, unreadable, encrypted, or not an ed25519 private key.
    """
    data = _read_key_file(path, "private key")
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise KeyFileError(f"{str(path)!r} is a public key; signing needs the private key (the file without .pub)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"private key {str(path)!r} is encrypted; give an unencrypted PKCS#8 key "
                           "(`paradis keys new` writes one)") from None
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise KeyFileError(f"{str(path)!r} is not a PEM private key (expected '-----BEGIN PRIVATE KEY-----'); "
                           "make one with `paradis keys new KEY`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"private key {str(path)!r} is {type(key).__name__.lstrip('_')}, not ed25519; "
                           "bundles are signed with ed25519 keys (`paradis keys new KEY`)")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """Reads an ed25519 public key (PEM SubjectPublicKeyInfo, the ``.pub`` of `new_keypair`).

    Raises:
        KeyFileError: missing, unreadable, a private key, or not an ed25519 public key.
    """
    data = _read_key_file(path, "public key")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{str(path)!r} is a private key; give its public key ({public_key_path(path)}), "
                           "which is all a verifier needs (keep the private key off the devices)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise KeyFileError(f"{str(path)!r} is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----'); "
                           "give the .pub file of `paradis keys new`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {str(path)!r} is {type(key).__name__.lstrip('_')}, not ed25519; "
                           "bundles are signed with ed25519 keys (`paradis keys new KEY`)")
    return key


def load_trusted_keys(paths: Iterable[str | os.PathLike]) -> tuple[Ed25519PublicKey, ...]:
    """The public keys of ``--trust-key`` files, in order, each once.

    Raises:
        KeyFileError: naming the first file that cannot be used.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        k = load_public_key(p)
        keys.setdefault(key_id(k), k)
    return tuple(keys.values())


# --------------------------------------------------------------------------
# signature file


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} has {len(raw)} bytes, expected {size}")
    return raw


@dataclass(frozen=True)
class _Entry:
    key_id: str
    public_key: bytes
    signature: bytes

    def to_json(self) -> dict:
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "public_key": _b64(self.public_key),
                "signature": _b64(self.signature)}


def _read_signatures(root: Path, label: str) -> list[_Entry] | None:
    """The entries of ``root/manifest.sig`` (None: there is no such file).

    Raises:
        SignatureError: the file is unreadable or malformed.
    """
    path = root / SIGNATURE_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(f"{label}: {SIGNATURE_FILE} is {size} bytes, more than the {MAX_SIGNATURE_FILE_BYTES} "
                             "a signature file may have; sign the bundle again with `paradis sign`")
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict) or raw.get("schema") != SIGNATURE_SCHEMA:
            raise ValueError(f"expected a JSON object with schema {SIGNATURE_SCHEMA!r}")
        if raw.get("schema_version") != SIGNATURE_SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {raw.get('schema_version')!r} (this kit reads "
                             f"{SIGNATURE_SCHEMA_VERSION})")
        sigs = raw.get("signatures")
        if not isinstance(sigs, list):
            raise ValueError("'signatures' is not a list")
        entries = []
        for i, s in enumerate(sigs):
            if not isinstance(s, dict):
                raise ValueError(f"signatures[{i}] is not an object")
            if s.get("algorithm") != ALGORITHM:
                raise ValueError(f"signatures[{i}]: algorithm {s.get('algorithm')!r}, expected {ALGORITHM!r}")
            kid = s.get("key_id")
            if not isinstance(kid, str) or len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
                raise ValueError(f"signatures[{i}]: key_id {kid!r} is not 16 lower-case hex digits")
            entries.append(_Entry(kid, _unb64(s.get("public_key"), f"signatures[{i}].public_key", 32),
                                  _unb64(s.get("signature"), f"signatures[{i}].signature", 64)))
    except OSError as e:
        raise SignatureError(f"{label}: cannot read {SIGNATURE_FILE}: {e.strerror or e}") from None
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SignatureError(f"{label}: {SIGNATURE_FILE} is malformed ({e}); sign the bundle again with "
                             "`paradis sign BUNDLE --key KEY`") from None
    return entries


def signature_key_ids(bundle_dir: str | os.PathLike) -> list[str]:
    """The key ids of the entries in the bundle's signature file (empty: not signed).

    Raises:
        SignatureError: the signature file is malformed.
    """
    entries = _read_signatures(Path(bundle_dir), str(bundle_dir))
    return [e.key_id for e in entries or ()]


def _verifies(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data)
        return True
    except InvalidSignature:
        return False


def sign_bundle(bundle_dir: str | os.PathLike, key: str | os.PathLike | Ed25519PrivateKey) -> SignResult:
    """Signs the bundle's manifest with ``key``, adding or replacing that key's entry in ``manifest.sig``.

    The bundle is validated first (`paradis_tf.bundle.load` with every file's
    sha256), so a signature never vouches for files that disagree with the
    manifest. Entries of other keys that no longer verify over the current
    manifest are dropped (`SignResult.dropped`).

    Raises:
        BundleError: the bundle is invalid or a file disagrees with its manifest.
        KeyFileError: the key cannot be used.
        SignatureError: the existing signature file is malformed (remove it to start afresh).
    """
    root = Path(bundle_dir)
    private = key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
    load_bundle(root, verify=True)
    manifest = (root / MANIFEST).read_bytes()
    public = private.public_key()
    kid = key_id(public)
    raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    entry = _Entry(kid, raw_public, private.sign(manifest))
    try:
        existing = _read_signatures(root, str(root)) or []
    except SignatureError as e:
        raise SignatureError(f"{e} (or remove {root / SIGNATURE_FILE} to start a new one)") from None
    replaced = any(e.key_id == kid for e in existing)
    kept, dropped, entries = [], [], []
    for e in existing:
        if e.key_id == kid:
            continue
        try:
            still_valid = _verifies(Ed25519PublicKey.from_public_bytes(e.public_key), e.signature, manifest)
        except ValueError:
            still_valid = False
        if still_valid:
            kept.append(e.key_id)
            entries.append(e)
        else:
            dropped.append(e.key_id)
    entries.append(entry)
    doc = {"schema": SIGNATURE_SCHEMA, "schema_version": SIGNATURE_SCHEMA_VERSION,
           "manifest_sha256": hashlib.sha256(manifest).hexdigest(), "signatures": [e.to_json() for e in entries]}
    path = root / SIGNATURE_FILE
    atomic_write_json(path, doc)
    return SignResult(path, kid, replaced, tuple(dropped), tuple(kept))


def verify_bundle(bundle_dir: str | os.PathLike, trusted_public_keys: Sequence[Ed25519PublicKey], *,
                  label: str | None = None) -> str:
    """Checks that a trusted key signed the bundle's manifest and that the files present match it.

    Args:
        bundle_dir: the bundle directory (or a node's stored version).
        trusted_public_keys: the keys whose signature is accepted.
        label: how messages name the bundle (default: the directory).

    Returns:
        The id of the trusted key whose signature verified.

    Raises:
        SignatureError: not signed; signed only by untrusted keys; the
            signature of a trusted key does not verify over the manifest; a
            file present disagrees with the manifest's size or sha256. The
            message names the bundle and the key ids.
    """
    root = Path(bundle_dir)
    label = label or f"bundle {str(root)!r}"
    trusted = {key_id(k): k for k in trusted_public_keys}
    if not trusted:
        raise SignatureError(f"{label}: no trusted keys to verify its signature against (give --trust-key PUB)")
    ids = ", ".join(trusted)
    try:
        manifest = (root / MANIFEST).read_bytes()
    except OSError as e:
        raise SignatureError(f"{label}: cannot read {MANIFEST} ({e.strerror or e})") from None
    entries = _read_signatures(root, label)
    if not entries:
        raise SignatureError(f"{label} is not signed (no {SIGNATURE_FILE}); a bundle must be signed by a trusted key "
                             f"({ids}): sign it with `paradis sign BUNDLE --key KEY`")
    mine = [e for e in entries if e.key_id in trusted]
    if not mine:
        others = ", ".join(e.key_id for e in entries)
        raise SignatureError(f"{label} is signed by untrusted key(s) {others}; trusted: {ids} (sign it with a "
                             "trusted key, or trust its key with --trust-key PUB)")
    good = next((e.key_id for e in mine if _verifies(trusted[e.key_id], e.signature, manifest)), None)
    if good is None:
        bad = ", ".join(e.key_id for e in mine)
        raise SignatureError(f"{label}: the signature of key {bad} does not match {MANIFEST} (the manifest was "
                             "changed after it was signed, or the signature is corrupt); refusing it")
    _check_files(root, manifest, label, good)
    return good


def _check_files(root: Path, manifest: bytes, label: str, kid: str) -> None:
    """Every file the signed manifest lists that is present has its size and sha256."""
    try:
        files = json.loads(manifest)["files"]
        listed = [(check_relpath(rel, "file path in the manifest"), int(e["size"]), str(e["sha256"]).lower())
                  for rel, e in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError, PathError) as e:
        raise SignatureError(f"{label}: the {MANIFEST} signed by key {kid} does not list its files readably ({e})") from None
    for rel, size, sha in listed:
        path = root / rel
        if not path.is_file():
            continue
        actual_size = path.stat().st_size
        if actual_size != size:
            raise SignatureError(f"{label}: file {rel!r} was changed after signing: it has {actual_size} bytes, the "
                                 f"{MANIFEST} signed by key {kid} says {size}")
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise SignatureError(f"{label}: cannot read file {rel!r} ({e.strerror or e})") from None
        if digest != sha:
            raise SignatureError(f"{label}: file {rel!r} was changed after signing: its sha256 is {digest[:16]}..., "
                                 f"the {MANIFEST} signed by key {kid} says {sha[:16]}...")
