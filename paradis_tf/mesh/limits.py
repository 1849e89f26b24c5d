"""Sizes, deadlines, channel options and metadata keys shared by every mesh endpoint.

Both ends set message sizes explicitly (gRPC's 4 MiB default would refuse a
224x224x3 float tensor batch and silently differ between client and server
versions); Deploy streams files in chunks well below the limit.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
DEPLOY_CHUNK_BYTES = 1024 * 1024

# Deadlines (seconds) the coordinator puts on its calls.
INFO_TIMEOUT_S = 5.0
ACTIVATE_TIMEOUT_S = 60.0
DEPLOY_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 10.0
# A node pushing a feature map to a peer never waits longer than this, nor
# longer than what is left of the request's own deadline.
EXCHANGE_TIMEOUT_S = 10.0
# How long an Exchange that arrived before its Run is kept.
MAILBOX_TTL_S = 30.0
MAILBOX_MAX_ENTRIES = 1024

# Reconnect quickly: a restarted node should be re-admitted within seconds,
# not after gRPC's default exponential backoff (up to 120 s).
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
)

HEALTH_SERVICE = "paradis.mesh.v1.Node"

# Trailing metadata key naming the peer role a node blames when it aborts a
# Run with ABORTED (a feature map it could not push or did not receive): the
# coordinator then checks that peer instead of marking the reporter down.
PEER_ROLE_KEY = "paradis-peer-role"
