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

**Roles.** Every certificate names one role, in its subject's
organizational unit: ``OU=paradis-coordinator``, ``OU=paradis-node`` or
``OU=paradis-observer`` (`ROLE_OU_PREFIX` + role). A node checks the caller's
role on every call (`RPC_ROLES`): Deploy, Activate and Run only from a
coordinator; Exchange only from a node whose certificate's common name is a
peer of the current activation; GetInfo, GetManifest and health from any
certificate of the fleet CA. A node certificate also carries its common
name as a DNS name, so that a node dialling a peer can require the peer's
certificate to name the node id the coordinator gave for that role
(`peer_channel_options`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from paradis_tf.files import atomic_write
from paradis_tf.mesh.errors import MeshError

__all__ = ["TlsConfig", "PlaintextRefused", "INSECURE_WARNING_INTERVAL_S", "is_loopback", "check_listen", "channel",
           "add_port", "make_ca", "issue", "ROLES", "ROLE_OU_PREFIX", "RPC_ROLES", "Identity", "certificate_identity",
           "caller_identity", "peer_channel_options", "fetch_peer_identity"]

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

    def identity(self) -> Identity:
        """The common name and role of this endpoint's own certificate."""
        return certificate_identity(self.load()[1])

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


# --- roles ---------------------------------------------------------------------
ROLES = ("coordinator", "node", "observer")
#: a certificate's role is its subject's organizational unit: ROLE_OU_PREFIX + role
ROLE_OU_PREFIX = "paradis-"
#: which certificate roles may call each RPC of `paradis.mesh.v1.Node` (health: any fleet certificate)
RPC_ROLES: dict[str, tuple[str, ...]] = {
    "GetInfo": ROLES,
    "GetManifest": ROLES,
    "Deploy": ("coordinator",),
    "Activate": ("coordinator",),
    "Run": ("coordinator",),
    "Exchange": ("node",),
    "Probe": ("coordinator",),
}


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is: common name and role ("" when it names none)."""

    name: str
    role: str

    def __str__(self) -> str:
        return f"{self.name!r} (role {self.role or 'none'})"


@functools.lru_cache(maxsize=256)
def certificate_identity(pem: bytes) -> Identity:
    """The common name and role of a PEM certificate (the first one of a chain)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    return _identity(cert, NameOID)


def _identity(cert, NameOID) -> Identity:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    roles = [ou[len(ROLE_OU_PREFIX):] for ou in ous if ou.startswith(ROLE_OU_PREFIX) and ou[len(ROLE_OU_PREFIX):] in ROLES]
    return Identity(str(cns[0].value) if cns else "", roles[0] if len(roles) == 1 else "")


def caller_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """The identity of the certificate the caller presented; None on a plaintext connection."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    return certificate_identity(bytes(pems[0]))


def peer_channel_options(node_id: str) -> tuple[tuple[str, str], ...]:
    """Channel options that make TLS require the server's certificate to name ``node_id``.

    Node certificates carry their common name as a DNS name (`issue`), so a
    node dialling a peer checks it reached the node the coordinator named,
    whatever address it dialled.
    """
    return (("grpc.ssl_target_name_override", node_id),)


async def fetch_peer_identity(address: str, tls: TlsConfig, timeout: float = 5.0) -> Identity:
    """Completes a TLS handshake with ``address`` and returns the identity its certificate shows.

    The handshake presents this endpoint's certificate and checks the peer's
    against the fleet CA (not against a host name: the caller compares the
    identity). Used before a discovered node may join a fleet.

    Raises:
        MeshError: no connection, a handshake failure (e.g. a certificate of
            another CA), or no answer within ``timeout``.
    """
    import asyncio
    import ssl

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    ctx.check_hostname = False  # the identity is checked by the caller
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), ssl=ctx), timeout)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ValueError) as e:
        raise MeshError(f"TLS handshake with {address} failed: {type(e).__name__}: {e}") from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        # Abort, not close: a graceful close waits for the peer's close_notify,
        # which a gRPC server may never send (asyncio then waits out its 30 s
        # SSL shutdown timeout). Only the certificate was wanted.
        writer.transport.abort()
    return _identity(x509.load_der_x509_certificate(der), NameOID)


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
          days: int = 825, *, role: str) -> tuple[Path, Path]:
    """Issues ``NAME.pem`` / ``NAME.key`` signed by the CA in ``ca_dir``.

    Args:
        ca_dir: directory with ``ca.pem`` and ``ca.key`` (from `make_ca`).
        name: the endpoint's name (common name and file names); for a node,
            its node id (the node takes it from its certificate).
        hosts: DNS names and IP addresses clients use to reach it (nodes);
            may be empty for a coordinator, which only acts as a client.
        out_dir: where to write (default: ``ca_dir``).
        role: ``coordinator``, ``node`` or ``observer`` (see `RPC_ROLES`);
            written as the subject's ``OU=paradis-<role>``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = _check_name(name)
    if role not in ROLES:
        raise MeshError(f"invalid certificate role {role!r}: expected one of {', '.join(ROLES)}")
    ca_dir = Path(ca_dir)
    ca_pem, ca_key_pem = _read(ca_dir / "ca.pem", "CA certificate"), _read(ca_dir / "ca.key", "CA private key")
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    sans: list[x509.GeneralName] = []
    if role == "node":  # peers check a node's id against this name (peer_channel_options)
        sans.append(x509.DNSName(name))
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if not h or any(c.isspace() for c in h):
                raise MeshError(f"invalid host {h!r} for the certificate: expected a DNS name or an IP address") from None
            if h != name or role != "node":
                sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU_PREFIX + role),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
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
