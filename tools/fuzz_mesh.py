#!/usr/bin/env python3
"""Property-based fuzzer (hypothesis) of every RPC handler of a live node daemon.

    python tools/fuzz_mesh.py --examples 10000 --out docs/benchmarks/fuzz_mesh.json
    python tools/fuzz_mesh.py --examples 300 --handlers Run,Exchange --seed 3

Starts one `paradis node serve` on 127.0.0.1 as a child process (TensorFlow
blocked in it, as on a board), deploys a small bundle with a sync layer to it
(built by the converter into ``--bundle`` when that folder has no
manifest.json), activates role 1 of the two-device plan 2x0.5 (its peer,
role 0, at 127.0.0.1:1 where nothing listens) and then, through a
`Coordinator`, the one-device plan 1x1.0. Both activations stay loaded (the
node keeps the previous one), so requests reach the single-device path and
the path that waits for a peer's feature map.

Then it sends generated requests, round-robin one batch per handler, to
GetInfo, Deploy (streams of begin/chunk/commit: garbage, valid prefixes then
garbage, tampered uploads, mutated manifests, random-byte models, the real
bundle again), Activate, Run, Exchange, GetManifest, Probe and
``grpc.health.v1.Health/Check``: structurally valid messages with hostile
field values (empty, NUL, huge and unicode strings, path traversal, the live
activation ids mixed with random ones, tensors of the wrong dtype, shape or
byte length, shapes whose element count overflows int64, NaN/Inf floats,
batches up to 40,000, out-of-range roles and segments, unknown fields).

The property: every call ends OK or with a refusal (`REFUSALS`);
DEADLINE_EXCEEDED only for a Run of the two-device activation, which waits
for a peer that never sends. Never UNKNOWN (an uncaught exception in a
handler), INTERNAL or UNAVAILABLE (a dead node); and the status message short
enough that a client with gRPC's default metadata limit reads it
(`DETAILS_LIMIT`: a longer one reaches it as RESOURCE_EXHAUSTED and the
node's refusal is lost). After every batch the node
must be alive and healthy, answer a good Run with the outputs this process
computes with the same interpreter, and still hold the same bundle version,
manifest and activations (`LiveNode.check`).

What the generator keeps out, and why:

* addresses outside loopback: a node dials its peers, so peer addresses are
  127.0.0.1 with hostile ports or malformed loopback forms only;
* an Activate that would load a plan of the real bundle (it would move the
  node off the activation under test): such a request gets an out-of-range
  role instead; the exact repeat of the current activation is sent (a
  no-op);
* a complete, consistent upload under the real bundle name other than the
  bundle itself (it would add a version): consistent hostile uploads go
  under ``fuzz-fake`` (mutated manifests) and ``fuzz-junk`` (random-byte
  models, which Activate may name).

Exit code 0 when no call ended otherwise and every check passed. The JSON
record holds, per handler, the requests sent, the status histogram, the
checks passed and the first calls that broke the property.
"""


import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import grpc
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grpc_health.v1 import health_pb2  # noqa: E402

from paradis_tf.bundle import Bundle, BundleError, TensorSpec  # noqa: E402
from paradis_tf.bundle import load as load_bundle  # noqa: E402
from paradis_tf.files import atomic_write_json  # noqa: E402
from paradis_tf.mesh import limits, tensors  # noqa: E402
from paradis_tf.mesh._proto import mesh_pb2  # noqa: E402
from paradis_tf.mesh.coordinator import Coordinator  # noqa: E402
from paradis_tf.mesh.local import NodeProcess  # noqa: E402
from paradis_tf.mesh.program import load_role_program, model_input_spec  # noqa: E402
from paradis_tf.quant import QTensor, convert  # noqa: E402

HANDLERS = ("GetInfo", "Deploy", "Activate", "Run", "Exchange", "GetManifest", "Probe", "Health.Check")
#: statuses a call may end with (DEADLINE_EXCEEDED only where `Call.may_time_out`)
REFUSALS = frozenset({"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "PERMISSION_DENIED",
                      "RESOURCE_EXHAUSTED", "ABORTED"})
PLAN = "1x1.0"  # the activation under test (current)
SYNC_PLAN, SYNC_ROLE, SYNC_ACTIVATION = "2x0.5", 1, "fuzz-sync"  # kept loaded as the previous activation
DEAD_PEER = "127.0.0.1:1"  # loopback, nothing listens (port 1 needs root)
CALL_TIMEOUT_S = 10.0
SYNC_RUN_TIMEOUT_S = 0.5  # a Run of the sync activation waits for a peer that never sends
FAKE_BUNDLE, JUNK_BUNDLE = "fuzz-fake", "fuzz-junk"

_METHODS = {
    "GetInfo": "/paradis.mesh.v1.Node/GetInfo",
    "Deploy": "/paradis.mesh.v1.Node/Deploy",
    "Activate": "/paradis.mesh.v1.Node/Activate",
    "Run": "/paradis.mesh.v1.Node/Run",
    "Exchange": "/paradis.mesh.v1.Node/Exchange",
    "GetManifest": "/paradis.mesh.v1.Node/GetManifest",
    "Probe": "/paradis.mesh.v1.Node/Probe",
    "Health.Check": "/grpc.health.v1.Health/Check",
}
# the client sends up to what the node accepts and more: the node's limit is what refuses
# and reads status details of any length, to learn the code the node really sent (`DETAILS_LIMIT` is checked apart)
_CLIENT_OPTIONS = (("grpc.max_send_message_length", 4 * limits.MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", 4 * limits.MAX_MESSAGE_BYTES),
                   ("grpc.max_metadata_size", 64 << 20), ("grpc.absolute_max_metadata_size", 64 << 20),
                   ("grpc.enable_retries", 0))
#: bytes of a status message on the wire (percent-encoded UTF-8) that a client with gRPC's default metadata limit
#: (8 KiB) is sure to read; a longer one reaches it as RESOURCE_EXHAUSTED "received metadata size exceeds ..." and
#: the node's real refusal is lost (a coordinator would even retry it)
DETAILS_LIMIT = 8192


# --- what one generated request is ------------------------------------------------
def _short(v):
    if isinstance(v, str):
        return v if len(v) <= 96 else f"{v[:48]!r}... ({len(v)} chars)"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes {v[:12].hex()}{'...' if len(v) > 12 else ''}>"
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def abbreviate(msg) -> dict:
    """A message as a dict with long strings, bytes and lists cut short (for reports)."""
    out: dict = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = {str(_short(k)): _short(v) for k, v in list(value.items())[:20]}
        elif fd.is_repeated:
            items = [abbreviate(v) if fd.message_type is not None else _short(v) for v in list(value)[:20]]
            if len(value) > 20:
                items.append(f"... {len(value) - 20} more")
            out[fd.name] = items
        elif fd.message_type is not None:
            out[fd.name] = abbreviate(value)
        else:
            out[fd.name] = _short(value)
    return out


@dataclass(frozen=True, repr=False)
class Call:
    """One generated request: the message (the stream for Deploy), unknown fields appended to its first
    message's encoding, and the deadline it is sent with."""

    handler: str
    messages: tuple
    extra: bytes = b""
    timeout_s: float = CALL_TIMEOUT_S
    may_time_out: bool = False  # a deadline is legitimately involved

    def payloads(self) -> list[bytes]:
        return [m.SerializeToString() + (self.extra if i == 0 else b"") for i, m in enumerate(self.messages)]

    def describe(self) -> dict:
        msgs = [abbreviate(m) for m in self.messages[:12]]
        if len(self.messages) > 12:
            msgs.append(f"... {len(self.messages) - 12} more messages")
        d: dict = {"handler": self.handler, "request": msgs if self.handler == "Deploy" else msgs[0]}
        if self.extra:
            d["unknown_fields"] = _short(self.extra)
        d["timeout_s"] = self.timeout_s
        return d

    def __repr__(self) -> str:
        return json.dumps(self.describe(), ensure_ascii=True, default=str)


@dataclass
class Context:
    """What the generator knows about the live node: the real bundle and the two loaded activations."""

    bundle: Bundle
    name: str
    version: str
    files: list[tuple[str, int, str]]  # path, size, sha256 as a coordinator deploys them
    data: dict[str, bytes]
    current: mesh_pb2.Activation
    sync: mesh_pb2.Activation
    _cache: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # hypothesis names strategies by their arguments
        return f"Context({self.name}/{self.version}, current={self.current.activation_id!r})"

    def cached(self, key, make: Callable):
        """``make()``, made once per ``key`` (messages the generator reuses unchanged)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def plans(self) -> list[str]:
        return list(self.bundle.plans)

    def resolve_plan(self, plan: str):
        try:
            return self.bundle.plan(plan)
        except (BundleError, ValueError, TypeError):
            return None

    def role_of(self, activation_id: str, plan: str) -> int | None:
        """The role a Run/Exchange with these ids reaches on the node (None: refused before)."""
        for a in (self.current, self.sync):
            if (activation_id == a.activation_id or (not activation_id and a is self.current)) and plan == a.plan:
                return a.role
        return None

    def input_spec(self, plan: str, role: int | None) -> TensorSpec | None:
        p = self.resolve_plan(plan)
        if p is None or role is None or not 0 <= role < len(p.devices):
            return None
        return model_input_spec(p, role)

    def output_spec(self, plan: str, role: int, segment: int) -> TensorSpec | None:
        p = self.resolve_plan(plan)
        if p is None or not 0 <= role < len(p.devices) or not 0 <= segment < len(p.devices[role].segments):
            return None
        return p.devices[role].segments[segment].output

    def would_load(self, bundle: str, plan: str, role: int) -> bool:
        """Whether an Activate could load a real model (kept out: it moves the node off the activation under test)."""
        p = self.resolve_plan(plan)
        return bundle == self.name and p is not None and 0 <= role < len(p.devices)

    def repeat_current(self) -> mesh_pb2.ActivateRequest:
        a = self.current
        return mesh_pb2.ActivateRequest(bundle=a.bundle, version=a.version, plan=a.plan, role=a.role,
                                        peers=dict(a.peers), activation_id=a.activation_id,
                                        peer_node_ids=dict(a.peer_node_ids))


# --- hostile values ----------------------------------------------------------------
NASTY_TEXT = (
    "", " ", "\x00", "a\x00b", "\n", "\t", "\r\n", ".", "..", "/", "//", "../", "../..", "../../etc/passwd",
    "/etc/passwd", "a/../../b", "switches/../../../state.json", "..\\..\\x", "C:\\x", "~", "~/x", "%2e%2e%2f",
    "nul\x00.tflite", "manifest.json", ".deploy.json", "tmp", "bundles", "state.json", "node-id", "-rf", "$(id)",
    "%s%n", "{}", "null", "é", "名前", "🙂", "\u202e", "\ufeff", "\u0301", "\uffff", "\U0010ffff", "x" * 128, "x" * 129,
    "a" + "/a" * 200, "-", "_", ".hidden", "CON", "seq-", "seq-0", "seq--1", "seq-99", "0x0", "2x0.50", "2x.5",
    "3x0.5", "1x1", "1x1.0\x00", " 2x0.5", "2X0.5", "nan", "inf",
)
INT32_EDGES = (0, 1, -1, 2, 3, 7, 255, 256, 2**15, 2**31 - 1, -(2**31))
INT64_EDGES = (0, 1, -1, 2**31, 2**32 + 1, 2**53 + 1, 2**62, 2**63 - 1, -(2**63))
UINT64_EDGES = (0, 1, 2**31, 2**32, 2**63, 2**64 - 1)
DOUBLE_EDGES = (0.0, -0.0, float("nan"), float("inf"), float("-inf"), 5e-324, 1e-300, 1e308, -1.0, 1.0, 1e-45)
PEER_ADDRESSES = (  # loopback only: a node dials its peers
    DEAD_PEER, "127.0.0.1:0", "127.0.0.1:65535", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:99999999999999999999",
    "127.0.0.1", "127.0.0.1:", ":1", "", "\x00", "127.0.0.1:1\x00", "127.0.0.1:abc", "[::1]:1", "[::1]",
    "127.0.0.1:1/x", "ipv4:127.0.0.1:1", "127.1:1", "127.0.0.1:1,127.0.0.1:2", " 127.0.0.1:1",
)


def int32():
    return st.one_of(st.sampled_from(INT32_EDGES), st.integers(-(2**31), 2**31 - 1))


def int64():
    return st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1))


def uint32():
    return st.one_of(st.sampled_from((0, 1, 2, 2**31, 2**32 - 1)), st.integers(0, 2**32 - 1))


def uint64():
    return st.one_of(st.sampled_from(UINT64_EDGES), st.integers(0, 2**64 - 1))


def doubles():
    return st.one_of(st.sampled_from(DOUBLE_EDGES), st.floats())


def huge_text():
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "\x00", "é", "🙂", "../", "a/"]),
                     st.sampled_from([129, 1000, 8192, 65536, 1 << 20]))


def text(*real: str):
    """Real values (when given), the nasty list, arbitrary unicode (no lone surrogates: not UTF-8), huge strings."""
    branches = [st.sampled_from(real)] if real else []
    branches += [st.sampled_from(NASTY_TEXT), st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
                 huge_text()]
    return st.one_of(*branches)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _unknown(fields: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray()
    for number, wire, value, blob in fields:
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(value)
        elif wire == 1:
            out += (value & (2**64 - 1)).to_bytes(8, "little")
        elif wire == 5:
            out += (value & (2**32 - 1)).to_bytes(4, "little")
        else:
            out += _varint(len(blob)) + blob
    return bytes(out)


def unknown_fields():
    """Fields no request message defines (numbers 32 and up, outside the reserved 19000-19999)."""
    number = st.one_of(st.integers(32, 18999), st.integers(20000, 2**29 - 1))
    return st.lists(st.tuples(number, st.sampled_from([0, 1, 2, 5]), st.integers(0, 2**64 - 1), st.binary(max_size=64)),
                    max_size=4).map(_unknown)


def extras():
    return st.one_of(st.just(b""), st.just(b""), st.just(b""), unknown_fields())


def _random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def payloads(max_small: int = 64):
    """Bytes: small arbitrary ones, or big random ones (64 KiB .. 4 MiB) made from a seed."""
    return st.one_of(st.binary(max_size=max_small),
                     st.builds(_random_bytes, st.sampled_from([1 << 16, 1 << 20, 4 << 20]), st.integers(0, 2**32 - 1)))


# --- tensors -------------------------------------------------------------------------
_ITEMSIZE = {mesh_pb2.DTYPE_INT8: 1, mesh_pb2.DTYPE_UINT8: 1, mesh_pb2.DTYPE_INT16: 2, mesh_pb2.DTYPE_INT32: 4,
             mesh_pb2.DTYPE_FLOAT32: 4}
_MAX_TENSOR_BYTES = 32_000_000  # just under the 32 MiB message limit
_SPECIAL_FLOATS = np.array([np.nan, np.inf, -np.inf, 0.0, 3.4e38, -0.0, 1e-45, 1.0], dtype="<f4")
BATCHES = st.one_of(st.just(1), st.integers(1, 8), st.sampled_from([0, 16, 255, 256, 1024, 4096]), st.just(40_000))


def _fill(nbytes: int, dtype: int, how: str, seed: int) -> bytes:
    if how == "zeros":
        return bytes(nbytes)
    if how == "ones":
        return b"\xff" * nbytes
    if how == "special" and dtype == mesh_pb2.DTYPE_FLOAT32:
        body = np.resize(np.roll(_SPECIAL_FLOATS, seed % 8), nbytes // 4).tobytes()
        return body + bytes(nbytes - len(body))
    return _random_bytes(nbytes, seed)


def _hostile_shapes(base: list[int]) -> list[list[int]]:
    rest = base[1:]
    return [[2**62, *rest], [2**63 - 1, *rest], [-(2**63), *rest], [-1, *rest], [0, *rest], [2**32 + 1, *rest],
            [2**31, 2**31, 4, 1], [2**21, 2**21, 2**21], [2**62, 2, 2, 2], [1] * 64, [], rest, [*base, 1], base[:-1],
            [1, *rest[:-1], 0], [1, *reversed(rest)]]


@st.composite
def tensor(draw, spec: TensorSpec | None) -> mesh_pb2.Tensor:
    """A wire tensor near ``spec`` (the right one with a varying batch, or wrong in dtype, shape, length, values or
    quantization); near a small int8 tensor when there is no spec."""
    right = tensors.DTYPES[spec.quant.dtype] if spec is not None else mesh_pb2.DTYPE_INT8
    if spec is not None and draw(st.integers(0, 1)) == 0:  # right dtype, shape, length and quantization
        b = draw(BATCHES.filter(lambda b: b >= 1))
        shape = [b, *spec.shape[1:]]
        nbytes = math.prod(shape) * _ITEMSIZE[right]
        if nbytes <= _MAX_TENSOR_BYTES:
            data = _fill(nbytes, right, draw(st.sampled_from(["random", "zeros", "ones", "special"])),
                         draw(st.integers(0, 2**32 - 1)))
            scale = draw(st.one_of(st.just(spec.quant.scale), st.floats(1e-30, 1e30)))
            return mesh_pb2.Tensor(dtype=right, shape=shape, data=data, scale=scale, zero_point=spec.quant.zero_point)
    dtype = draw(st.one_of(st.just(right), st.just(right), st.sampled_from(sorted(_ITEMSIZE) + [0]), int32()))
    base = list(spec.shape) if spec is not None else [1, 4]
    batched = BATCHES.map(lambda b: [b, *base[1:]])
    shape = draw(st.one_of(
        batched, batched, st.sampled_from(_hostile_shapes(base)), st.lists(int64(), max_size=6),
        st.tuples(st.integers(0, len(base) - 1), int64()).map(lambda t: base[:t[0]] + [t[1]] + base[t[0] + 1:]),
    ))
    count = math.prod(shape) if all(d >= 0 for d in shape) else -1
    want = count * _ITEMSIZE.get(dtype, 1)
    mode = draw(st.sampled_from(["match", "match", "match", "minus1", "plus1", "empty", "random"]))
    if mode == "match" and 0 <= want <= _MAX_TENSOR_BYTES:
        nbytes = want
    elif mode == "minus1" and 1 <= want <= _MAX_TENSOR_BYTES:
        nbytes = want - 1
    elif mode == "plus1" and 0 <= want < _MAX_TENSOR_BYTES:
        nbytes = want + 1
    elif mode == "empty":
        nbytes = 0
    else:
        nbytes = draw(st.integers(0, 4096))
    data = _fill(nbytes, dtype, draw(st.sampled_from(["random", "zeros", "ones", "special"])), draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.one_of(st.just(spec.quant.scale if spec is not None else 0.05), doubles()))
    zero_point = draw(st.one_of(st.just(spec.quant.zero_point if spec is not None else 0), int64()))
    return mesh_pb2.Tensor(dtype=dtype, shape=shape, data=data, scale=scale, zero_point=zero_point)


# --- requests per handler ------------------------------------------------------------
def request_ids():
    return st.one_of(st.sampled_from(["r0", "r1", "r2"]), st.uuids().map(str), text())


@st.composite
def _target(draw, ctx: Context, kinds: Sequence[str] = ("current", "current", "implicit", "sync", "random")) -> tuple[str, str]:
    """(activation id, plan): the live activations, the implicit one, random ones; sometimes a wrong plan."""
    kind = draw(st.sampled_from(kinds))
    if kind == "current":
        aid, plan = ctx.current.activation_id, ctx.current.plan
    elif kind == "implicit":
        aid, plan = "", ctx.current.plan
    elif kind == "sync":
        aid, plan = ctx.sync.activation_id, ctx.sync.plan
    else:
        aid, plan = draw(text(ctx.current.activation_id, ctx.sync.activation_id)), draw(text(*ctx.plans))
    if draw(st.integers(0, 4)) == 0:
        plan = draw(text(*ctx.plans))
    return aid, plan


@st.composite
def run_calls(draw, ctx: Context) -> Call:
    aid, plan = draw(_target(ctx))
    req = mesh_pb2.RunRequest(request_id=draw(request_ids()), plan=plan, activation_id=aid)
    if draw(st.integers(0, 9)):
        req.input.CopyFrom(draw(tensor(ctx.input_spec(plan, ctx.role_of(aid, plan)))))
    sync = aid == ctx.sync.activation_id and plan == ctx.sync.plan
    return Call("Run", (req,), draw(extras()), SYNC_RUN_TIMEOUT_S if sync else CALL_TIMEOUT_S, may_time_out=sync)


@st.composite
def exchange_calls(draw, ctx: Context) -> Call:
    aid, plan = draw(_target(ctx, ("sync", "sync", "current", "implicit", "random")))
    p = draw(st.one_of(st.just(0), st.integers(0, 1), int32()))  # role 1 of the sync plan takes role 0's segment 0
    s = draw(st.one_of(st.just(0), st.integers(0, 2), int32()))
    req = mesh_pb2.ExchangeRequest(request_id=draw(request_ids()), plan=plan, activation_id=aid, producer_role=p,
                                   producer_segment=s)
    if draw(st.integers(0, 9)):
        req.tensor.CopyFrom(draw(tensor(ctx.output_spec(plan, p, s))))
    return Call("Exchange", (req,), draw(extras()))


@st.composite
def activate_calls(draw, ctx: Context) -> Call:
    if draw(st.integers(0, 19)) == 0:  # the exact current activation again: a no-op
        return Call("Activate", (ctx.repeat_current(),), draw(extras()))
    bundle = draw(text(ctx.name, JUNK_BUNDLE))
    if bundle.startswith("fuzz-") and bundle != JUNK_BUNDLE:  # mutated manifests may still load: never named
        bundle = JUNK_BUNDLE
    version = draw(st.one_of(st.just(ctx.version), st.just(""), st.text("0123456789abcdef", min_size=16, max_size=16),
                             text()))
    plan = draw(text(*ctx.plans))
    role = draw(st.one_of(st.integers(-1, 3), int32()))
    if ctx.would_load(bundle, plan, role):
        n = len(ctx.resolve_plan(plan).devices)
        role = draw(st.sampled_from([n, n + 1, -1, 2**31 - 1, -(2**31)]))
    peers = draw(st.dictionaries(st.one_of(st.integers(-1, 3), int32()),
                                 st.one_of(st.sampled_from(PEER_ADDRESSES),
                                           st.integers(0, 2**20).map(lambda port: f"127.0.0.1:{port}"),
                                           st.sampled_from([1000, 65536]).map(lambda n: "127.0.0.1:" + "1" * n)),
                                 max_size=4))
    peer_node_ids = draw(st.dictionaries(st.one_of(st.integers(-1, 3), int32()), text("node0", "fuzz0"), max_size=3))
    aid = draw(st.one_of(st.just(ctx.current.activation_id), st.just(ctx.sync.activation_id), st.just(""), text()))
    req = mesh_pb2.ActivateRequest(bundle=bundle, version=version, plan=plan, role=role, peers=peers,
                                   activation_id=aid, peer_node_ids=peer_node_ids)
    return Call("Activate", (req,), draw(extras()))


def _begin(name: str, files: Sequence[tuple[str, int, str]]) -> mesh_pb2.DeployRequest:
    sha = next((h for p, _, h in files if p == "manifest.json"), "")
    return mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(
        bundle=name, manifest_sha256=sha, files=[mesh_pb2.FileEntry(path=p, size=s, sha256=h) for p, s, h in files]))


def _chunks(files: Sequence[tuple[str, int, str]], data: dict[str, bytes], size: int) -> list[mesh_pb2.DeployRequest]:
    out = []
    for i, (path, _, _) in enumerate(files):
        blob = data[path]
        for off in range(0, len(blob), size):
            out.append(mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=off, data=blob[off:off + size])))
    return out


_COMMIT = mesh_pb2.DeployRequest(commit=mesh_pb2.DeployCommit())


def _upload(name: str, data: dict[str, bytes], chunk: int) -> tuple:
    files = [(p, len(b), hashlib.sha256(b).hexdigest()) for p, b in data.items()]
    return (_begin(name, files), *_chunks(files, data, chunk), _COMMIT)


def deploy_messages(ctx: Context):
    """One DeployRequest of any kind, with hostile values."""
    paths = [p for p, _, _ in ctx.files]
    shas = [h for _, _, h in ctx.files]
    sha = st.one_of(st.sampled_from(shas), st.text("0123456789abcdefABCDEF", max_size=70), text())
    entry = st.builds(lambda p, s, h: mesh_pb2.FileEntry(path=p, size=s, sha256=h), text(*paths), uint64(), sha)
    begin = st.builds(lambda n, h, f: mesh_pb2.DeployRequest(begin=mesh_pb2.DeployBegin(bundle=n, manifest_sha256=h, files=f)),
                      text(ctx.name), sha, st.lists(entry, max_size=5))
    chunk = st.builds(lambda i, o, d: mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=i, offset=o, data=d)),
                      st.one_of(st.integers(0, len(paths)), uint32()), st.one_of(st.integers(0, 8192), uint64()), payloads())
    return st.one_of(begin, chunk, st.just(_COMMIT), st.just(mesh_pb2.DeployRequest()))


_JSON_VALUES = (None, True, False, 0, -1, 1, 2**31, 2**63, 2**100, -(2**70), 1.5, 1e308, float("nan"), float("inf"),
                "", "\x00", "../../x", "/etc/passwd", "int4", "float64", "x" * 10000, [], {}, [[[]]], [-1, -1],
                [2**62, 28, 28, 1], {"device": 5, "segment": 9}, {"device": -1, "segment": 0}, "input")


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, (*prefix, i))


@st.composite
def mutated_manifest(draw, raw: bytes) -> bytes:
    """The real manifest with one to three values replaced, removed or added."""
    m = json.loads(raw)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _json_paths(m) if p]
        path = draw(st.sampled_from(paths))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        value = copy.deepcopy(draw(st.sampled_from(_JSON_VALUES)))  # a later step may add to it
        if op == "replace":
            parent[path[-1]] = value
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(text())] = value
        else:
            parent.append(value)
    return json.dumps(m).encode()


@st.composite
def deploy_calls(draw, ctx: Context) -> Call:
    kind = draw(st.sampled_from(["garbage", "prefix", "prefix", "tampered", "manifest", "junk", "again", "many_files"]))
    chunk_size = draw(st.sampled_from([4096, 65536, limits.DEPLOY_CHUNK_BYTES]))
    real = ctx.cached(("chunks", chunk_size), lambda: _chunks(ctx.files, ctx.data, chunk_size))
    garbage = st.lists(deploy_messages(ctx), max_size=4)
    if kind == "garbage":
        msgs = tuple(draw(st.lists(deploy_messages(ctx), max_size=6)))
    elif kind == "prefix":  # a valid beginning, then anything
        k = draw(st.integers(0, len(real)))
        begin = mesh_pb2.DeployRequest()
        begin.CopyFrom(ctx.cached("begin", lambda: _begin(ctx.name, ctx.files)))
        begin.begin.bundle = draw(text(ctx.name, "fuzz-prefix"))
        msgs = (begin, *real[:k], *draw(garbage))
        if draw(st.booleans()):
            msgs += (_COMMIT,)
    elif kind == "tampered":  # the real upload with one thing wrong: never stored, the real version untouched
        begin = ctx.cached("begin", lambda: _begin(ctx.name, ctx.files))
        chunks = list(real)
        how = draw(st.sampled_from(["flip", "size", "sha", "drop", "duplicate", "swap", "extend"]))
        i = draw(st.integers(0, len(chunks) - 1))
        c = chunks[i].chunk
        if how == "flip":
            d = bytearray(c.data)
            d[draw(st.integers(0, len(d) - 1))] ^= 1 << draw(st.integers(0, 7))
            chunks[i] = mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(file_index=c.file_index, offset=c.offset, data=bytes(d)))
        elif how in ("size", "sha"):
            begin = mesh_pb2.DeployRequest()
            begin.CopyFrom(ctx.cached("begin", lambda: _begin(ctx.name, ctx.files)))
            f = begin.begin.files[draw(st.integers(0, len(ctx.files) - 1))]
            if how == "size":
                f.size = draw(st.one_of(st.integers(0, f.size + 1).filter(lambda s, n=f.size: s != n), uint64().filter(lambda s, n=f.size: s != n)))
            else:
                f.sha256 = hashlib.sha256(f.sha256.encode()).hexdigest()
        elif how == "drop":
            del chunks[i]
        elif how == "duplicate":
            chunks.insert(i, chunks[i])
        elif how == "swap" and len(chunks) > 1:
            j = (i + 1) % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
        else:
            chunks.insert(i + 1, mesh_pb2.DeployRequest(chunk=mesh_pb2.FileChunk(
                file_index=c.file_index, offset=c.offset + len(c.data), data=draw(payloads(16)) or b"\x00")))
        msgs = (begin, *chunks, _COMMIT)
    elif kind == "manifest":  # consistent upload of a mutated manifest and the real models
        data = dict(ctx.data)
        data["manifest.json"] = draw(mutated_manifest(ctx.data["manifest.json"]))
        msgs = _upload(FAKE_BUNDLE, data, chunk_size)
    elif kind == "junk":  # consistent upload of the real plans with random-byte models
        seed = draw(st.integers(0, 2**32 - 1))
        manifest = json.loads(ctx.data["manifest.json"])
        data = {}
        for pname, plan in manifest["plans"].items():
            for dev in plan["devices"]:
                for seg in dev["segments"]:
                    if seg["file"] not in data:
                        blob = _random_bytes(draw(st.sampled_from([0, 8, seg["size"]])), seed + len(data))
                        data[seg["file"]] = blob
                    seg["size"], seg["sha256"] = len(data[seg["file"]]), hashlib.sha256(data[seg["file"]]).hexdigest()
        for rel, entry in manifest.get("files", {}).items() if isinstance(manifest.get("files"), dict) else ():
            if rel in data and isinstance(entry, dict):
                entry["size"], entry["sha256"] = len(data[rel]), hashlib.sha256(data[rel]).hexdigest()
        data = {"manifest.json": json.dumps(manifest).encode(), **data}
        msgs = _upload(JUNK_BUNDLE, data, chunk_size)
    elif kind == "again":  # the real bundle itself: already present
        msgs = (ctx.cached("begin", lambda: _begin(ctx.name, ctx.files)), *real, _COMMIT)
    else:  # more file entries than a bundle may have
        n = draw(st.sampled_from([10_000, 10_001, 50_000]))
        begin = mesh_pb2.DeployRequest()
        begin.CopyFrom(ctx.cached(("many", n), lambda: _begin("", [("manifest.json", ctx.files[0][1], ctx.files[0][2])]
                                                            + [(f"f{i}", 1, "0" * 64) for i in range(n)])))
        begin.begin.bundle = draw(text(ctx.name))
        msgs = (begin, *draw(garbage))
    return Call("Deploy", msgs, draw(extras()))


def strategies(ctx: Context) -> dict:
    """handler -> strategy of `Call` for the node ``ctx`` describes."""
    return {
        "GetInfo": unknown_fields().map(lambda extra: Call("GetInfo", (mesh_pb2.GetInfoRequest(),), extra)),
        "Deploy": deploy_calls(ctx),
        "Activate": activate_calls(ctx),
        "Run": run_calls(ctx),
        "Exchange": exchange_calls(ctx),
        "GetManifest": st.builds(
            lambda b, v, extra: Call("GetManifest", (mesh_pb2.GetManifestRequest(bundle=b, version=v),), extra),
            text(ctx.name, JUNK_BUNDLE, FAKE_BUNDLE),
            st.one_of(st.just(ctx.version), st.just(""), st.text("0123456789abcdef", min_size=16, max_size=16), text()),
            extras()),
        "Probe": st.builds(
            lambda n, r, extra: Call("Probe", (mesh_pb2.ProbeRequest(payload=bytes(n), reply_bytes=r),), extra),
            st.one_of(st.sampled_from([0, 1, limits.MAX_PROBE_BYTES, limits.MAX_PROBE_BYTES + 1]), st.integers(0, 4096)),
            st.one_of(st.sampled_from([0, 1, limits.MAX_PROBE_BYTES, limits.MAX_PROBE_BYTES + 1, 2**32 - 1]),
                      st.integers(0, 2**32 - 1)),
            extras()),
        "Health.Check": st.builds(
            lambda s, extra: Call("Health.Check", (health_pb2.HealthCheckRequest(service=s),), extra),
            text("", limits.HEALTH_SERVICE, "grpc.health.v1.Health"), extras()),
    }


# --- the node under test ---------------------------------------------------------------
class NodeBroken(AssertionError):
    """The node died, stopped answering, or lost its bundle, activation or good output."""


class LiveNode:
    """One node daemon (child process on 127.0.0.1) with the bundle deployed, role 1 of 2x0.5 kept loaded and
    1x1.0 active; `check` proves it still serves right.

    Args:
        bundle_dir: a bundle with the plans 1x1.0 and 2x0.5 (e.g. tests/mesh/conftest.py's ``bundle_sync``).
        root: a directory for the node's store and log.
    """

    def __init__(self, bundle_dir: str | os.PathLike, root: str | os.PathLike) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.root = Path(root)
        self.starts = 0
        self.checks = 0
        self.proc: NodeProcess | None = None
        self.channel: grpc.Channel | None = None

    # lifecycle
    def start(self) -> "LiveNode":
        self.starts += 1
        self.proc = NodeProcess(self.root / f"node-{self.starts}", node_id="fuzz0", block_tensorflow=True)
        address = self.proc.start()
        self.channel = grpc.insecure_channel(address, options=_CLIENT_OPTIONS)
        self._unary = {h: self.channel.unary_unary(m) for h, m in _METHODS.items() if h != "Deploy"}
        self._deploy = self.channel.stream_unary(_METHODS["Deploy"])
        with Coordinator([address], run_timeout_s=30) as c:
            reply = c.deploy(self.bundle_dir)[address]
            name, version = reply.bundle, reply.version
            self._reply(self._unary["Activate"](mesh_pb2.ActivateRequest(
                bundle=name, version=version, plan=SYNC_PLAN, role=SYNC_ROLE, peers={0: DEAD_PEER, 1: address},
                activation_id=SYNC_ACTIVATION).SerializeToString(), timeout=60), mesh_pb2.ActivateReply)
            c.select(PLAN)
        info = self.info()
        bundle = load_bundle(self.bundle_dir, verify=False)
        files = _deploy_files(bundle)
        self.ctx = Context(
            bundle=bundle, name=name, version=version, files=files,
            data={p: (self.bundle_dir / p).read_bytes() for p, _, _ in files},
            current=info.activation,
            sync=mesh_pb2.Activation(bundle=name, version=version, plan=SYNC_PLAN, role=SYNC_ROLE,
                                     peers={0: DEAD_PEER, 1: address}, activation_id=SYNC_ACTIVATION),
        )
        if info.activation.plan != PLAN:
            raise NodeBroken(f"the node activated {info.activation.plan!r}, expected {PLAN!r}")
        self.stored = self._stored(info)
        self.manifest = self._manifest()
        self._good, self.expected = self._good_run(bundle)
        self.check()
        return self

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.alive():
            self.proc.stop()

    def restart(self) -> None:
        """A fresh node on a fresh store (after a crash)."""
        if self.proc is not None:
            self.proc.kill()
        self.close()
        self.start()

    def __enter__(self) -> "LiveNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # calls
    def call(self, c: Call) -> tuple[str, str]:
        """Sends ``c``; (status name, details)."""
        p = c.payloads()
        try:
            if c.handler == "Deploy":
                self._deploy(iter(p), timeout=c.timeout_s)
            else:
                self._unary[c.handler](p[0], timeout=c.timeout_s)
            return "OK", ""
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""

    @staticmethod
    def _reply(raw: bytes, cls):
        return cls.FromString(raw)

    def info(self) -> mesh_pb2.NodeInfo:
        return mesh_pb2.NodeInfo.FromString(self._unary["GetInfo"](b"", timeout=CALL_TIMEOUT_S))

    def _stored(self, info: mesh_pb2.NodeInfo) -> list[tuple]:
        return [(v.version, v.bytes, tuple(v.plans)) for b in info.bundles if b.name == self.ctx.name for v in b.versions]

    def _manifest(self) -> bytes:
        raw = self._unary["GetManifest"](mesh_pb2.GetManifestRequest(
            bundle=self.ctx.name, version=self.ctx.version).SerializeToString(), timeout=CALL_TIMEOUT_S)
        return mesh_pb2.GetManifestReply.FromString(raw).manifest_json

    def _good_run(self, bundle: Bundle) -> tuple[mesh_pb2.RunRequest, list[mesh_pb2.SegmentOutput]]:
        """A correct Run of the current activation and the outputs this process computes for it."""
        a = self.ctx.current
        spec = model_input_spec(bundle.plan(a.plan), a.role)
        x = np.random.default_rng(1).random((1, *spec.shape[1:]), dtype=np.float32)
        wire = tensors.encode_qtensor(convert(QTensor.from_float(x), spec.quant))
        req = mesh_pb2.RunRequest(plan=a.plan, activation_id=a.activation_id, input=wire)
        program = load_role_program(bundle, a.plan, a.role, backend="litert", threads=1)
        xq = tensors.decode_qtensor(wire, spec)
        local: dict[int, QTensor] = {}
        expected = []
        for j in range(program.num_segments):
            ins = []
            for inp in program.needs(j):
                if inp.source is None:
                    ins.append(xq)
                elif inp.source.device == a.role:
                    ins.append(local[inp.source.segment])
                else:
                    raise ValueError(f"plan {a.plan!r} needs a peer; the good Run needs a one-device plan")
            local[j] = program.run_segment(j, ins)
            if program.is_fusion_output(j):
                expected.append(mesh_pb2.SegmentOutput(segment=j, tensor=tensors.encode_qtensor(local[j])))
        return req, expected

    def check(self) -> None:
        """Raises `NodeBroken` unless the node is alive and healthy, answers the good Run with the expected
        outputs, and holds the same bundle version, manifest and activations."""
        self.checks += 1
        what = "health check"
        try:
            if not self.proc.alive():
                raise NodeBroken(f"the node died (exit code {self.proc.proc.returncode}); its log ends:\n{self.log_tail()}")
            h = health_pb2.HealthCheckResponse.FromString(
                self._unary["Health.Check"](health_pb2.HealthCheckRequest().SerializeToString(), timeout=CALL_TIMEOUT_S))
            if h.status != health_pb2.HealthCheckResponse.SERVING:
                raise NodeBroken(f"health is {health_pb2.HealthCheckResponse.ServingStatus.Name(h.status)}")
            what = "good Run"
            self._good.request_id = f"good-{self.checks}"
            reply = mesh_pb2.RunReply.FromString(self._unary["Run"](self._good.SerializeToString(), timeout=CALL_TIMEOUT_S))
            if list(reply.outputs) != self.expected or reply.request_id != self._good.request_id:
                raise NodeBroken("the good Run's outputs differ from the ones computed here with the same interpreter")
            what = "GetInfo"
            info = self.info()
            if info.activation != self.ctx.current:
                raise NodeBroken(f"the activation changed: {abbreviate(info.activation)} (was {abbreviate(self.ctx.current)})")
            if self._stored(info) != self.stored:
                raise NodeBroken(f"the stored versions of {self.ctx.name!r} changed: {self._stored(info)} (were {self.stored})")
            what = "GetManifest"
            if self._manifest() != self.manifest:
                raise NodeBroken("the stored manifest changed")
            what = "Exchange to the sync activation"
            spec = self.ctx.output_spec(SYNC_PLAN, 0, 0)
            t = tensors.encode(np.full(spec.shape, spec.quant.zero_point, spec.quant.np_dtype), spec.quant.scale, spec.quant.zero_point)
            code, details = self.call(Call("Exchange", (mesh_pb2.ExchangeRequest(
                request_id=f"check-{self.checks}", plan=SYNC_PLAN, activation_id=SYNC_ACTIVATION, producer_role=0,
                producer_segment=0, tensor=t),)))
            if code not in ("OK", "RESOURCE_EXHAUSTED"):  # a full mailbox still proves the activation is loaded
                raise NodeBroken(f"the sync activation is gone: Exchange {code}: {details}")
        except grpc.RpcError as e:
            raise NodeBroken(f"{what}: {e.code().name}: {e.details()}; the node's log ends:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 3000) -> str:
        path = self.proc.log_path if self.proc is not None else None
        return path.read_text(errors="replace")[-n:] if path is not None and path.exists() else ""


def _deploy_files(bundle: Bundle) -> list[tuple[str, int, str]]:
    """manifest.json and every int8 segment file, as a coordinator deploys them."""
    raw = (bundle.root / "manifest.json").read_bytes()
    files = {"manifest.json": (len(raw), hashlib.sha256(raw).hexdigest())}
    for plan in bundle.plans.values():
        for dev in plan.devices:
            for seg in dev.segments:
                files[seg.file] = (seg.size, seg.sha256)
    return [(p, s, h) for p, (s, h) in files.items()]


# --- the driver -------------------------------------------------------------------------
@dataclass
class HandlerReport:
    """What one handler was sent and how it answered."""

    handler: str
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    broken: int = 0  # calls that ended outside the property
    failures: list[dict] = field(default_factory=list)  # the first ones, described
    examples: dict[str, str] = field(default_factory=dict)  # status -> the details of its first call
    broken_kinds: Counter = field(default_factory=Counter)  # "STATUS: message up to the value it names" -> calls
    seconds: float = 0.0
    batches: int = 0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "statuses": dict(self.statuses.most_common()), "broken": self.broken,
                "batches_checked": self.batches, "seconds": round(self.seconds, 1),
                "broken_kinds": dict(self.broken_kinds.most_common()), "failures": self.failures,
                "first_details": self.examples}


class PropertyBroken(AssertionError):
    """A call ended with a status outside the property (strict mode)."""


_PLAIN = bytes(range(0x20, 0x7F)).replace(b"%", b"")  # sent as they are in grpc-message; other bytes as %XX


def wire_length(details: str) -> int:
    """Bytes of a status message in the grpc-message trailer (percent-encoded UTF-8)."""
    raw = details.encode("utf-8", "surrogatepass")
    return len(raw) + 2 * len(raw.translate(None, _PLAIN))


def allowed(c: Call, code: str, details: str = "") -> bool:
    """Whether a call ending with ``code`` keeps the property (and its message fits `DETAILS_LIMIT`)."""
    ok = code in REFUSALS or (code == "DEADLINE_EXCEEDED" and c.may_time_out)
    return ok and wire_length(details) <= DETAILS_LIMIT


def _run_examples(strategy, fn: Callable[[Call], None], n: int, *, seed: int, derandomize: bool, shrink: bool) -> None:
    phases = (Phase.generate, Phase.shrink) if shrink else (Phase.generate,)

    @settings(max_examples=n, deadline=None, derandomize=derandomize, database=None, phases=phases,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)
    @given(strategy)
    def prop(call: Call) -> None:
        fn(call)

    if not derandomize:
        prop = hypothesis_seed(seed)(prop)
    prop()


def fuzz(node: LiveNode, handlers: Sequence[str] = HANDLERS, examples: int = 300, *, batch: int = 500, seed: int = 0,
         strict: bool = False, derandomize: bool = False, stop_at: float | None = None,
         progress: Callable[[str], None] | None = None, keep_failures: int = 10,
         after_batch: Callable[[dict[str, HandlerReport]], None] | None = None) -> dict[str, HandlerReport]:
    """Sends about ``examples`` generated requests to each handler, one batch per handler in turn.

    Args:
        node: the started node.
        handlers: names from `HANDLERS`.
        examples: requests per handler.
        batch: requests between two `LiveNode.check` calls.
        seed: the generator's seed (batch i of handler h uses a seed made from it).
        strict: raise `PropertyBroken` at the first call outside the property (hypothesis then shrinks it to a
            minimal request) and `NodeBroken` at the first failed check; else count them, restart a node that
            broke, and go on.
        derandomize: hypothesis's derandomize (then every batch of a handler repeats the same requests: give
            ``batch >= examples``).
        stop_at: a `time.monotonic()` time after which no new batch starts.
        progress: called with a line after every batch.
        after_batch: called with the reports so far after every batch (e.g. to save them).

    Returns:
        handler -> `HandlerReport`.
    """
    reports = {h: HandlerReport(h) for h in handlers}
    exhausted: set[str] = set()  # hypothesis found nothing new to send
    round_ = 0
    while True:
        todo = [h for h in handlers if reports[h].requests < examples and h not in exhausted]
        if not todo or (stop_at is not None and time.monotonic() >= stop_at):
            break
        for h in todo:
            rep = reports[h]
            first_broken: list[str] = []

            def one(c: Call, rep: HandlerReport = rep, first_broken: list[str] = first_broken) -> None:
                code, details = node.call(c)
                rep.requests += 1
                rep.statuses[code] += 1
                rep.examples.setdefault(code, details[:300])
                if allowed(c, code, details):
                    return
                rep.broken += 1
                rep.broken_kinds[f"{code}: {details.split(chr(39))[0][:80]}"] += 1
                desc = {"status": code, "details": details if len(details) <= 2000 else f"{details[:2000]}... ({len(details):,} chars)",
                        **c.describe()}
                if code in REFUSALS:
                    desc["why"] = f"status message of {wire_length(details):,} bytes on the wire, over {DETAILS_LIMIT:,}"
                if len(rep.failures) < keep_failures:
                    rep.failures.append(desc)
                if strict:
                    if not first_broken:
                        first_broken.append(json.dumps({**desc, "details": desc["details"][:300]}, default=str))
                    raise PropertyBroken(f"{rep.handler} answered {code}: {details[:300]}"
                                         + (f"... ({len(details):,} chars)" if len(details) > 300 else ""))

            n = min(batch, examples - rep.requests)
            before, t0 = rep.requests, time.perf_counter()
            try:
                _run_examples(strategies(node.ctx)[h], one, n, seed=seed * 1_000_003 + HANDLERS.index(h) * 10_007 + round_,
                              derandomize=derandomize, shrink=strict)
            except PropertyBroken as e:
                raise PropertyBroken(f"{e}\nfirst request that broke the property: {first_broken[0]}") from e
            finally:
                rep.seconds += time.perf_counter() - t0
            try:
                node.check()
            except NodeBroken as e:
                rep.failures.append({"handler": h, "check_failed_after_batch": rep.batches, "why": str(e)[:3000]})
                rep.broken += 1
                rep.broken_kinds[f"check failed: {str(e)[:80]}"] += 1
                if strict:
                    raise
                node.restart()
            rep.batches += 1
            if rep.requests == before:
                exhausted.add(h)
            if progress:
                progress(f"{h}: {rep.requests:,}/{examples:,} ({rep.requests - before} in {time.perf_counter() - t0:.1f} s) "
                         + ", ".join(f"{k} {v}" for k, v in rep.statuses.most_common()))
            if after_batch:
                after_batch(reports)
        round_ += 1
    return reports


def build_bundle(out: Path) -> None:
    """The bundle of tests/mesh/conftest.py's ``bundle_sync``: a tiny MobileNet with a sync layer (1x1.0, 2x0.5, seq-2)."""
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    model = mobilenet_v1((28, 28, 1), 10, ["1x1.0", "2x0.5"], width=0.25, depth=3, sync_layers=[1])
    calib = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    convert_model(model, out, calib, calib_samples=8, sequential=(2,), tflm=False)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=10_000, help="generated requests per handler (default: %(default)s)")
    ap.add_argument("--handlers", default=",".join(HANDLERS), help="comma-separated handlers (default: all)")
    ap.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "paradis-fuzz-bundle",
                    help="bundle with plans 1x1.0 and 2x0.5; built there when it has no manifest.json (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=500, help="requests between two checks of the node (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=0.0, help="start no batch after this many minutes (0: no limit)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here (after every batch: a run cut short leaves what it reached)")
    args = ap.parse_args(argv)
    handlers = [h.strip() for h in args.handlers.split(",") if h.strip()]
    unknown = [h for h in handlers if h not in HANDLERS]
    if unknown:
        ap.error(f"unknown handlers {unknown}; choose from {', '.join(HANDLERS)}")
    if not (args.bundle / "manifest.json").exists():
        print(f"building the bundle in {args.bundle} ...", file=sys.stderr, flush=True)
        build_bundle(args.bundle)
    start = time.monotonic()
    stop_at = start + args.minutes * 60 if args.minutes > 0 else None
    record: dict = {
        "command": "python tools/fuzz_mesh.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "examples_per_handler": args.examples, "seed": args.seed, "batch": args.batch,
        "machine": {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "property": "every call OK or " + ", ".join(sorted(REFUSALS - {"OK"})) + " (DEADLINE_EXCEEDED only for a Run "
                    "waiting for a peer); after every batch the node alive, healthy, serving the good Run with the "
                    "expected outputs, bundle version, manifest and activations unchanged",
    }
    def save(reports: dict[str, HandlerReport], node: LiveNode) -> None:
        record["handlers"] = {h: r.as_dict() for h, r in reports.items()}
        record["unknown_or_internal"] = sum(r.statuses["UNKNOWN"] + r.statuses["INTERNAL"] for r in reports.values())
        record["broken"] = sum(r.broken for r in reports.values())
        record["complete"] = all(r.requests >= args.examples for r in reports.values())
        record["node_starts"], record["checks_passed"] = node.starts, node.checks
        record["seconds"] = round(time.monotonic() - start, 1)
        record["machine"]["loadavg_end"] = os.getloadavg()
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, record, indent=1)

    with tempfile.TemporaryDirectory(prefix="paradis-fuzz-") as tmp, LiveNode(args.bundle, tmp) as node:
        reports = fuzz(node, handlers, args.examples, batch=args.batch, seed=args.seed, stop_at=stop_at,
                       progress=lambda line: print(f"[{time.monotonic() - start:6.0f} s] {line}", file=sys.stderr, flush=True),
                       after_batch=lambda reports: save(reports, node))  # a record even if the run is cut short
        save(reports, node)
    print(f"{'handler':13} {'requests':>9} {'broken':>6} {'seconds':>8}  statuses")
    for h, r in reports.items():
        print(f"{h:13} {r.requests:>9,} {r.broken:>6} {r.seconds:>8.1f}  "
              + ", ".join(f"{k} {v:,}" for k, v in r.statuses.most_common()))
    for r in reports.values():
        for f in r.failures[:3]:
            print("BROKEN:", json.dumps({k: (v[:200] + "..." if isinstance(v, str) and len(v) > 200 else v)
                                         for k, v in f.items() if k != "request"}, default=str))
    return 0 if record["broken"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
