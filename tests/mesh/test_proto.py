"""The protocol's generated code is exactly what tools/gen_proto.py makes."""

import subprocess
import sys
from pathlib import Path

from paradis_tf.mesh._proto import mesh_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_changes_nothing():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "up to date" in r.stdout


def test_wire_names_and_messages():
    assert mesh_pb2.DESCRIPTOR.package == "paradis.mesh.v1"
    node = mesh_pb2.DESCRIPTOR.services_by_name["Node"]
    assert node.full_name == "paradis.mesh.v1.Node"
    methods = {m.name: m for m in node.methods}
    assert {"GetInfo", "Deploy", "Activate", "Run", "Exchange"} <= set(methods)
    assert methods["Deploy"].client_streaming and not methods["Deploy"].server_streaming
    assert not methods["Run"].client_streaming
    fields = set(mesh_pb2.Tensor.DESCRIPTOR.fields_by_name)
    assert fields == {"dtype", "shape", "data", "scale", "zero_point"}
