"""`paradis keys new|id`: ed25519 keys that sign bundles.

    paradis keys new release.key            # release.key (private, mode 0600) and release.pub
    paradis keys id release.pub             # the key id nodes report and refusals name
    paradis sign bundle/ --key release.key  # or: paradis convert ... --sign-key release.key
    paradis node serve ... --trust-key release.pub

A key file named X.key gets its public key X.pub; any other name KEY gets
KEY.pub. Keep the private key on the build machine; devices need only the
.pub file. The key id is the first 16 hex digits of sha256 over the raw
32-byte public key.
"""

from __future__ import annotations

import argparse
from types import ModuleType


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="make ed25519 keys that sign bundles", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    n = sub.add_parser("new", help="write a new private key KEY and its public key (X.key -> X.pub, else KEY.pub)")
    n.add_argument("key", metavar="KEY", help="private key file to create (refuses to replace an existing key)")
    n.set_defaults(func=_new)
    i = sub.add_parser("id", help="print the key id of a public (or private) key file")
    i.add_argument("pub", metavar="PUB", help="public key file (.pub of `paradis keys new`), or the private key")
    i.set_defaults(func=_id)


def signing_module() -> ModuleType:
    """`paradis_tf.mesh.signing`, or a one-line error naming what to install (a training machine may lack it)."""
    try:
        from paradis_tf.mesh import signing
    except ImportError as e:
        from paradis_tf.errors import ParaDiSError

        raise ParaDiSError(f"signing bundles needs the mesh packages ({e}); install them with "
                           "`pip install .[node]` (cryptography, grpcio)") from None
    return signing


def _new(args: argparse.Namespace) -> int:
    signing = signing_module()
    key, pub = signing.new_keypair(args.key)
    print(f"private key {key} (mode 0600; keep it on the build machine)\npublic key  {pub} (give it to the devices: "
          f"--trust-key {pub})\nkey id      {signing.key_id(signing.load_public_key(pub))}")
    return 0


def _id(args: argparse.Namespace) -> int:
    from pathlib import Path

    signing = signing_module()
    path = Path(args.pub)
    is_private = path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:4096]
    print(signing.key_id(signing.load_private_key(path).public_key() if is_private else signing.load_public_key(path)))
    return 0


def add_trust_key_args(group) -> None:
    """``--trust-key PUB`` (repeatable) of the daemons that deploy and activate bundles."""
    group.add_argument("--trust-key", action="append", default=[], metavar="PUB",
                       help="public key (`paradis keys new`) whose signature a bundle needs to be deployed or "
                            "activated (repeatable: any one of them; none: bundles are not verified, with a warning)")
