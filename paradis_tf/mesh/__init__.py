"""The gRPC mesh: node daemons and the coordinator that drives them.

Coordinator side:
    `Coordinator` (deploy, select, infer / submit / infer_async), `Placement`.
Node side:
    `NodeServicer`, `NodeConfig`, `serve` (imported from `paradis_tf.mesh.node`).
Local daemons (tests, demo, benchmarks):
    `LocalMesh`, `NodeProcess`.
Errors:
    `MeshError` and subclasses.
"""

from paradis_tf.mesh.coordinator import Coordinator, NodeStatus
from paradis_tf.mesh.errors import DeployError, MeshError, NodeError, NoPlanFitsError, RequestFailedError, TensorError
from paradis_tf.mesh.local import LocalMesh, NodeProcess
from paradis_tf.mesh.placement import Placement

__all__ = [
    "Coordinator",
    "NodeStatus",
    "Placement",
    "LocalMesh",
    "NodeProcess",
    "MeshError",
    "DeployError",
    "NodeError",
    "NoPlanFitsError",
    "RequestFailedError",
    "TensorError",
]
