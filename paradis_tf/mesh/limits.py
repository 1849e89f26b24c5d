"""Sizes, deadlines, rate limits, channel options and metadata keys shared by every mesh endpoint,
and the check of names and ids in requests (`check_text`).

Both ends set message sizes explicitly (gRPC's 4 MiB default would refuse a
224x224x3 float tensor batch and silently differ between client and server
versions); Deploy streams files in chunks well below the limit.
"""

from __future__ import annotations

import re

from paradis_tf.mesh.errors import MeshError

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
DEPLOY_CHUNK_BYTES = 1024 * 1024

# Deadlines (seconds) the coordinator puts on its calls.
INFO_TIMEOUT_S = 5.0
# Probe: payload bytes each way; a coordinator times a few to measure a link
MAX_PROBE_BYTES = 1 << 20
# GetInfo of the nodes that are up while re-planning (a request may be waiting on it)
REPLAN_INFO_TIMEOUT_S = 1.0
ACTIVATE_TIMEOUT_S = 60.0
DEPLOY_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 10.0
# A node pushing a feature map to a peer never waits longer than this, nor
# longer than what is left of the request's own deadline.
EXCHANGE_TIMEOUT_S = 10.0
# How long an Exchange that arrived before its Run is kept.
MAILBOX_TTL_S = 30.0
MAILBOX_MAX_ENTRIES = 1024
# Feature maps one producer role of one activation may have waiting: a peer
# that floods Exchange fills its own share, not the mailbox of every other peer.
MAILBOX_MAX_PER_PRODUCER = 256

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

# --- bounded work ----------------------------------------------------------------
# `--max-batch 0` (auto): one Run may take about this long on the node, so a
# big request cannot hold the interpreter thread from other callers longer.
# The node measures its role at batch 1 when it activates (role_latency_ms);
# the largest batch is floor(RUN_BATCH_BUDGET_MS / role_latency_ms), at least 1
# (`auto_max_batch`). Per-sample cost only falls with the batch, so the rule is
# conservative.
RUN_BATCH_BUDGET_MS = 100.0

# Activations that load and measure a model (a repeated, identical Activate is
# a no-op and takes nothing): ACTIVATION_BURST back to back, then
# ACTIVATION_RATE_PER_S; beyond that Activate answers RESOURCE_EXHAUSTED and
# the current activation keeps serving. A coordinator re-planning after a
# failure activates each node once or twice; it retries RESOURCE_EXHAUSTED
# for up to ACTIVATE_RETRY_S.
ACTIVATION_BURST = 5
ACTIVATION_RATE_PER_S = 1.0
ACTIVATE_RETRY_S = 15.0

# --- names and ids in requests ---------------------------------------------------
MAX_ID_CHARS = 128  # request_id, activation_id
MAX_NAME_CHARS = 128  # bundle, version, plan, node ids
MAX_ADDRESS_CHARS = 255  # peer HOST:PORT in Activate
MAX_TENSOR_DIMS = 8  # a wire tensor's rank (models here use 4)

_CONTROL = re.compile("[\x00-\x1f\x7f]")

# A refusal may quote hostile input; its status message goes into the
# grpc-message trailer percent-encoded (a non-ASCII byte takes three), and
# clients refuse trailers over 8 KiB. Messages are cut to this many UTF-8 bytes.
MAX_STATUS_BYTES = 1024


def status_message(message: str) -> str:
    """``message`` cut to at most MAX_STATUS_BYTES UTF-8 bytes (whole characters), saying how long it was."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= MAX_STATUS_BYTES:
        return message
    head = raw[:MAX_STATUS_BYTES - 64].decode("utf-8", "ignore")
    return f"{head}... ({len(message):,} characters)"


class FieldError(MeshError, ValueError):
    """A request field that is too long or holds a control character (a NUL byte...)."""


def check_text(value: str, field: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """Returns ``value`` if it is at most ``max_chars`` characters without control characters.

    Args:
        value: the received string (may be empty: whether a field is
            required is the handler's business).
        field: how to name the field in the message ("Run.request_id").

    Raises:
        FieldError: too long, or a NUL byte or another control character.
    """
    if len(value) > max_chars:
        raise FieldError(f"{field} is {len(value)} characters long ({value[:32]!r}...); at most {max_chars} are allowed")
    bad = _CONTROL.search(value)
    if bad is not None:
        ch = bad.group()
        what = "a NUL byte" if ch == "\x00" else f"the control character {ch!r}"
        raise FieldError(f"{field} {value!r} holds {what} at position {bad.start()}; send printable text")
    return value


def auto_max_batch(role_latency_ms: float, budget_ms: float = RUN_BATCH_BUDGET_MS) -> int:
    """The largest batch of one Run under `--max-batch 0`: floor(budget / per-sample ms), at least 1."""
    if not role_latency_ms > 0:  # not measured
        return 1
    return max(1, int(budget_ms // role_latency_ms))
