"""Mutual TLS for the mesh: every endpoint proves who it is.

Without TLS anyone on the factory network can deploy a model to a node or
read its feature maps. With a `TlsConfig` on every node and coordinator:

* nodes serve gRPC over TLS and **require a client certificate** signed by
  the fleet's CA (coordinators, and peer nodes pushing feature maps);
* clients verify the node's certificate against the same CA, and its name
  (the address's host must be among the certificate's DNS or IP names).

`make_ca` and `issue` (``paradis certs init|issue``) create the CA and the
certificates with the `cryptography` package: EC P-256 keys, certificates
usable as server and client (a node is both: it serves Run and pushes
Exchange to its peers).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from paradis_tf.files import atomic_write
from paradis_tf.mesh.errors import MeshError

__all__ = ["TlsConfig", "PlaintextRefused", "INSECURE_WARNING_INTERVAL_S", "is_loopback", "check_listen", "channel",
           "add_port", "make_ca", "issue"]

#: how often a daemon serving plaintext off loopback (``--insecure``) repeats its warning
INSECURE_WARNING_INTERVAL_S = 3600.0


class PlaintextRefused(MeshError):
    """A daemon asked to serve plaintext on an address other hosts can reach."""

    exit_code = 2  # a usage error: the command line must change


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is reachable only from this machine.

    Any other name counts as reachable from the network: it may resolve to any address.
    """
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, tls: "TlsConfig | None", insecure: bool = False) -> bool:
    """Refuses plaintext on a non-loopback ``listen`` address unless ``insecure``.

    Returns:
        True when the daemon will serve plaintext off loopback (``insecure``): it must warn.

    Raises:
        PlaintextRefused: plaintext asked on a non-loopback address without ``insecure``.
    """
    if tls is not None or is_loopback(listen.rpartition(":")[0]):
        return False
    if not insecure:
        raise PlaintextRefused(
            f"refusing to serve plaintext on {listen}, an address other hosts can reach: anyone on that network could "
            "deploy, activate and run models (give --tls-ca/--tls-cert/--tls-key for mutual TLS, see `paradis certs`; "
            "or --insecure to serve plaintext anyway; or listen on 127.0.0.1)"
        )
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MeshError(f"cannot read the TLS {what} {str(path)!r}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise MeshError(f"the TLS {what} {str(path)!r} is not PEM (expected a '-----BEGIN ...' block)")
    return data


@dataclass(frozen=True)
class TlsConfig:
    """This endpoint's certificate and key, and the fleet CA that signs all of them.

    Args:
        ca: PEM file of the CA certificate(s) trusted for peers.
        cert: PEM file of this endpoint's certificate (chain).
        key: PEM file of its private key.
    """

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_args(cls, ca: str | None, cert: str | None, key: str | None) -> "TlsConfig | None":
        """From the ``--tls-ca/--tls-cert/--tls-key`` flags: all three or none."""
        given = [v for v in (ca, cert, key) if v]
        if not given:
            return None
        if len(given) != 3:
            raise MeshError("TLS needs all of --tls-ca, --tls-cert and --tls-key (or none of them for plaintext)")
        cfg = cls(Path(ca), Path(cert), Path(key))
        cfg.load()  # fail now, with the file's name, not at the first call
        return cfg

    def load(self) -> tuple[bytes, bytes, bytes]:
        return _read(self.ca, "CA certificate"), _read(self.cert, "certificate"), _read(self.key, "private key")

    def server_credentials(self) -> grpc.ServerCredentials:
        ca, cert, key = self.load()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self.load()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def channel(address: str, tls: TlsConfig | None, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
    """A `grpc.aio` channel to ``address``: mutual TLS when ``tls`` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def add_port(server: grpc.aio.Server, listen: str, tls: TlsConfig | None) -> int:
    """Binds ``listen`` (TLS with required client certificates when ``tls``); returns the port."""
    if tls is None:
        return server.add_insecure_port(listen)
    return server.add_secure_port(listen, tls.server_credentials())


# --- certificates -------------------------------------------------------------
def _check_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise MeshError(f"invalid certificate name {name!r}: expected letters, digits, '-', '_' and '.' (it names the files)")
    return name


def make_ca(out_dir: str | os.PathLike, common_name: str = "paradis fleet CA", days: int = 3650) -> tuple[Path, Path]:
    """Creates ``ca.pem`` and ``ca.key`` (0600) in ``out_dir``; refuses to overwrite a CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    if cert_path.exists() or key_path.exists():
        raise MeshError(f"{out} already holds a CA (ca.pem / ca.key); certificates it signed would stop working if it were replaced")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue(ca_dir: str | os.PathLike, name: str, hosts: Sequence[str], out_dir: str | os.PathLike | None = None,
          days: int = 825) -> tuple[Path, Path]:
    """Issues ``NAME.pem`` / ``NAME.key`` signed by the CA in ``ca_dir``.

    Args:
        ca_dir: directory with ``ca.pem`` and ``ca.key`` (from `make_ca`).
        name: the endpoint's name (common name and file names).
        hosts: DNS names and IP addresses clients use to reach it (nodes);
            may be empty for a coordinator, which only acts as a client.
        out_dir: where to write (default: ``ca_dir``).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = _check_name(name)
    ca_dir = Path(ca_dir)
    ca_pem, ca_key_pem = _read(ca_dir / "ca.pem", "CA certificate"), _read(ca_dir / "ca.key", "CA private key")
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if not h or any(c.isspace() for c in h):
                raise MeshError(f"invalid host {h!r} for the certificate: expected a DNS name or an IP address") from None
            sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out = Path(out_dir) if out_dir is not None else ca_dir
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
