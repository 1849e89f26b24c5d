"""Mutual TLS: real node daemons serving gRPC over TLS on loopback, with
certificates made by `paradis certs` (the `cryptography` package)."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from paradis_tf.cli import main
from paradis_tf.mesh import Coordinator
from paradis_tf.mesh.errors import DeployError, MeshError
from paradis_tf.mesh.local import LocalMesh
from paradis_tf.mesh.security import TlsConfig, issue, make_ca
from paradis_tf.runtime import LocalRunner


def _flags(d, name):
    return ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key")]


def _cfg(d, name) -> TlsConfig:
    return TlsConfig(d / "ca.pem", d / f"{name}.pem", d / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", str(d)]) == 0
    for i in range(2):
        assert main(["certs", "issue", str(d), "--name", f"node{i}", "--role", "node", "--host", "127.0.0.1",
                     "--host", "localhost"]) == 0
    assert main(["certs", "issue", str(d), "--name", "coordinator", "--role", "coordinator"]) == 0
    issue(d, "node0-elsewhere", ["10.9.9.9"], role="node")  # a valid certificate for another host
    other = tmp_path_factory.mktemp("other-pki")
    make_ca(other)
    issue(other, "intruder", [], role="coordinator")
    return d, other


def test_certs_files_and_key_modes(pki):
    d, _ = pki
    for name in ("ca", "node0", "coordinator"):
        assert (d / f"{name}.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert stat.S_IMODE((d / f"{name}.key").stat().st_mode) == 0o600
    with pytest.raises(MeshError, match="already holds a CA"):
        make_ca(d)


def test_mutual_tls_mesh_exchanges_feature_maps_and_equals_local(tmp_path, pki, bundle_sync, images):
    d, other = pki
    with LocalMesh(2, tmp_path, capacity=0.5, block_tensorflow=True, pki=d) as mesh:
        with Coordinator(mesh.addresses, tls=_cfg(d, "coordinator")) as c:
            c.deploy(bundle_sync)
            assert c.select("2x0.5").plan == "2x0.5"
            x = images[:16]
            np.testing.assert_array_equal(c.infer(x), LocalRunner(bundle_sync, "2x0.5").predict(x))
            # the sync layer's feature maps went node to node, over TLS too
            assert all(s.info.counters.exchanges_received >= 16 for s in c.status())
        # no certificate, or one from another CA: the node refuses the connection and keeps serving
        for tls in (None, _cfg(other, "intruder")):
            with Coordinator(mesh.addresses, tls=tls) as c:
                with pytest.raises(DeployError, match="UNAVAILABLE"):
                    c.deploy(bundle_sync)
                assert not any(s.up for s in c.status(timeout=2))
        with Coordinator(mesh.addresses, tls=_cfg(d, "coordinator")) as c:
            assert all(s.up for s in c.status())


def test_node_certificate_must_name_the_dialled_host(tmp_path, pki, bundle_sync):
    d, _ = pki
    with LocalMesh(1, tmp_path, block_tensorflow=True, extra_args=[*_flags(d, "node0-elsewhere"), "--node-id", "node0-elsewhere"]) as mesh:
        with Coordinator(mesh.addresses, tls=_cfg(d, "coordinator")) as c:
            (status,) = c.status(timeout=3)
            assert not status.up and "UNAVAILABLE" in status.error


def test_tls_flags_and_files_are_checked(tmp_path, pki, capsys):
    d, _ = pki
    with pytest.raises(MeshError, match="needs all of --tls-ca, --tls-cert and --tls-key"):
        TlsConfig.from_args(str(d / "ca.pem"), None, None)
    assert TlsConfig.from_args(None, None, None) is None
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(MeshError, match=r"the TLS certificate '.*bad.pem' is not PEM"):
        TlsConfig.from_args(str(d / "ca.pem"), str(bad), str(d / "node0.key"))
    with pytest.raises(MeshError, match="cannot read the TLS CA certificate '/nonexistent/ca.pem'"):
        TlsConfig.from_args("/nonexistent/ca.pem", str(d / "node0.pem"), str(d / "node0.key"))
    with pytest.raises(MeshError, match="invalid certificate name '../x'"):
        issue(d, "../x", [], role="node")
    with pytest.raises(MeshError, match="invalid certificate role 'admin'"):
        issue(d, "x", [], role="admin")
    assert main(["mesh", "status", "--nodes", "127.0.0.1:1", "--tls-ca", str(d / "ca.pem")]) == 1
    assert "paradis: TLS needs all of --tls-ca, --tls-cert and --tls-key" in capsys.readouterr().err
