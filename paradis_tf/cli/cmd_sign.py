"""`paradis sign BUNDLE --key KEY`: sign a bundle for nodes started with --trust-key.

Writes BUNDLE/manifest.sig: an ed25519 signature over the exact bytes of
manifest.json, which pins every file's size and sha256. The bundle's files
are checked against the manifest first. Signing again with the same key
replaces that key's signature; another key adds its own. Sign after
anything that rewrites manifest.json (`paradis qcheck` records accuracies
there): a signature made before no longer verifies.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("sign", help="sign a bundle with an ed25519 key (paradis keys new)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle directory (from `paradis convert`)")
    p.add_argument("--key", required=True, metavar="KEY", help="private key file (`paradis keys new KEY`)")
    p.set_defaults(func=_sign)


def _sign(args: argparse.Namespace) -> int:
    from paradis_tf.cli.cmd_keys import signing_module

    print_signed(signing_module().sign_bundle(args.bundle, args.key))
    return 0


def print_signed(result) -> None:
    """One line per thing `sign_bundle` did (shared with `paradis convert --sign-key`)."""
    print(f"signed {result.path} with key {result.key_id}" + (" (replacing its earlier signature)" if result.replaced else ""))
    if result.kept:
        print(f"also signed by: {', '.join(result.kept)}")
    if result.dropped:
        print(f"dropped signatures that no longer match manifest.json: {', '.join(result.dropped)}")
