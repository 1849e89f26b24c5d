"""`paradis certs init|issue`: the fleet CA and certificates for mutual TLS.

    paradis certs init  pki/                                    # pki/ca.pem, pki/ca.key (keep ca.key offline)
    paradis certs issue pki/ --name pi1 --role node --host 10.0.0.2 --host pi1.local
    paradis certs issue pki/ --name coordinator --role coordinator   # a client-only certificate
    paradis certs issue pki/ --name grafana --role observer          # may read status, nothing else
    paradis node serve ... --tls-ca pki/ca.pem --tls-cert pki/pi1.pem --tls-key pki/pi1.key
    paradis mesh status --nodes 10.0.0.2:50051 --tls-ca pki/ca.pem --tls-cert pki/coordinator.pem --tls-key pki/coordinator.key

Nodes then accept calls only from holders of a certificate of this CA, and
clients check that a node's certificate names the host they dialled.

The role is written in the certificate's subject as OU=paradis-<role>:
a coordinator may deploy, activate and run; a node may push feature maps to
the peers its activation names (its name is its node id); an observer may
read GetInfo, manifests and health. Anything else is PERMISSION_DENIED.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("certs", help="create the fleet CA and certificates for mutual TLS", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="certs_command", metavar="ACTION")
    sub.required = True
    i = sub.add_parser("init", help="create a CA (ca.pem, ca.key) in DIR")
    i.add_argument("dir", help="directory for ca.pem and ca.key (refuses to replace an existing CA)")
    i.add_argument("--common-name", default="paradis fleet CA", help="CA name (default: %(default)s)")
    i.add_argument("--days", type=int, default=3650, help="validity (default: %(default)s)")
    i.set_defaults(func=_init)
    s = sub.add_parser("issue", help="issue NAME.pem / NAME.key signed by the CA in DIR")
    s.add_argument("dir", help="the CA directory")
    s.add_argument("--name", required=True, help="endpoint name (common name and file names)")
    s.add_argument("--role", required=True, choices=("coordinator", "node", "observer"),
                   help="what the holder may do: coordinator (deploy, activate, run), node (serve; push feature maps "
                        "to its peers; NAME is its node id), observer (read status)")
    s.add_argument("--host", action="append", default=[],
                   help="DNS name or IP address clients use to reach this endpoint (repeatable; none for a coordinator)")
    s.add_argument("--out", default=None, help="output directory (default: the CA directory)")
    s.add_argument("--days", type=int, default=825, help="validity (default: %(default)s)")
    s.set_defaults(func=_issue)


def _init(args: argparse.Namespace) -> int:
    from paradis_tf.mesh.security import make_ca

    cert, key = make_ca(args.dir, args.common_name, args.days)
    print(f"CA certificate {cert}\nCA key         {key} (mode 0600; keep it off the boards)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from paradis_tf.mesh.security import issue

    cert, key = issue(args.dir, args.name, args.host, args.out, args.days, role=args.role)
    print(f"certificate {cert} ({args.role}) for {', '.join(args.host) or 'client use only'}\nkey         {key} (mode 0600)")
    return 0
