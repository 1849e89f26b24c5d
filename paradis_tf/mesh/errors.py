"""Exception family of the mesh (rooted in `paradis_tf.errors.ParaDiSError`)."""

from __future__ import annotations

from paradis_tf.errors import ParaDiSError


class MeshError(ParaDiSError):
    """Root of every error the mesh raises on purpose."""


class TensorError(MeshError, ValueError):
    """A tensor message whose dtype, shape or byte length is wrong."""


class DeployError(MeshError):
    """A bundle upload that was refused or could not be completed."""


class NodeError(MeshError):
    """A node answered a call with an error (its status and message are kept)."""

    def __init__(self, address: str, method: str, code: str, details: str):
        super().__init__(f"node {address}: {method} failed: {code}: {details}")
        self.address = address
        self.method = method
        self.code = code
        self.details = details


class ProgramReplacedError(MeshError):
    """The hardware behind a role now runs another partition (a serial board holds one): the request belongs to
    an activation that was replaced; the node answers FAILED_PRECONDITION and the coordinator re-plans."""


class NoPlanFitsError(MeshError):
    """No plan of the bundle fits the healthy nodes' capacities."""


class RequestFailedError(MeshError):
    """An inference request that could not be answered (after its retry)."""
