"""Property-based fuzz (hypothesis) of every RPC handler of a live node daemon, with tools/fuzz_mesh.py's
strategies: hostile requests end OK or with a refusal (never UNKNOWN, INTERNAL or a dead node, and with a status
message a default client can read), and after them the node answers a good Run with the outputs computed here,
holding the same bundle and activations. The benchmark run (10,000 requests per handler) is in docs/BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytestmark = pytest.mark.slow  # a node daemon, about a minute of requests

EXAMPLES = 200
HANDLERS = ("GetInfo", "Deploy", "Activate", "Run", "Exchange", "GetManifest", "Probe", "Health.Check")
# statuses that show the generator got past the first check of each handler (a refusal deep inside, or success)
REACHED = {
    "GetInfo": {"OK"},
    "Deploy": {"OK", "INVALID_ARGUMENT"},  # "OK": the real bundle again, already present
    "Activate": {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION"},  # "OK": the current activation repeated
    "Run": {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION"},  # "OK": a generated input ran through the model
    "Exchange": {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION"},  # "OK": a feature map reached the mailbox
    "GetManifest": {"OK", "NOT_FOUND", "INVALID_ARGUMENT"},
    "Probe": {"OK", "INVALID_ARGUMENT"},
    "Health.Check": {"OK", "NOT_FOUND"},
}


@pytest.fixture(scope="module")
def fuzz(tool):
    return tool("fuzz_mesh")


@pytest.fixture(scope="module")
def live(fuzz, bundle_sync, tmp_path_factory):
    """One node daemon with the bundle deployed, 2x0.5 role 1 kept loaded and 1x1.0 active."""
    with fuzz.LiveNode(bundle_sync, tmp_path_factory.mktemp("fuzz")) as node:
        yield node


def test_every_handler_has_a_strategy(fuzz, live):
    assert fuzz.HANDLERS == HANDLERS
    assert set(fuzz.strategies(live.ctx)) == set(HANDLERS) == set(REACHED)


def test_the_property(fuzz):
    c = fuzz.Call("GetManifest", (fuzz.mesh_pb2.GetManifestRequest(),))
    assert fuzz.allowed(c, "OK") and fuzz.allowed(c, "INVALID_ARGUMENT", "bundle 'x' is not stored")
    assert not fuzz.allowed(c, "UNKNOWN") and not fuzz.allowed(c, "INTERNAL") and not fuzz.allowed(c, "UNAVAILABLE")
    assert not fuzz.allowed(c, "DEADLINE_EXCEEDED")
    assert fuzz.allowed(dataclasses.replace(c, may_time_out=True), "DEADLINE_EXCEEDED")
    # a refusal whose message a client with gRPC's default 8 KiB metadata limit cannot read
    assert fuzz.wire_length("a%\u00e9") == 1 + 3 + 6
    assert fuzz.allowed(c, "INVALID_ARGUMENT", "x" * 8000)
    assert not fuzz.allowed(c, "INVALID_ARGUMENT", "\u00e9" * 1400)


@pytest.mark.parametrize("handler", HANDLERS)
def test_hostile_requests_are_refused_cleanly(fuzz, live, handler):
    # strict: the first call outside the property raises (hypothesis shrinks it first), and so does a failed check
    # of the node after the batch (alive, healthy, the good Run's outputs, bundle version, manifest, activations)
    checks = live.checks
    rep = fuzz.fuzz(live, [handler], EXAMPLES, batch=EXAMPLES, strict=True, derandomize=True)[handler]
    assert rep.requests >= EXAMPLES
    assert rep.broken == 0 and not rep.failures
    assert live.checks == checks + 1 and live.starts == 1
    assert REACHED[handler] <= set(rep.statuses), dict(rep.statuses)
    assert not {"UNKNOWN", "INTERNAL", "UNAVAILABLE"} & set(rep.statuses)


def test_a_run_waiting_for_a_silent_peer_ends_before_its_deadline(fuzz, live):
    # the one place a deadline is involved: role 1 of 2x0.5 waits for role 0 (127.0.0.1:1, nothing listens)
    ctx = live.ctx
    spec = ctx.input_spec(ctx.sync.plan, ctx.sync.role)
    x = fuzz.np.zeros((1, *spec.shape[1:]), spec.quant.np_dtype)
    req = fuzz.mesh_pb2.RunRequest(request_id="silent-peer", plan=ctx.sync.plan, activation_id=ctx.sync.activation_id,
                                   input=fuzz.tensors.encode(x, spec.quant.scale, spec.quant.zero_point))
    code, details = live.call(fuzz.Call("Run", (req,), timeout_s=2.0, may_time_out=True))
    assert code == "ABORTED" and "role 0" in details, (code, details)
    live.check()


def test_the_command_line_writes_a_record(fuzz, bundle_sync, tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--bundle", str(bundle_sync), "--examples", "25", "--batch", "25",
                      "--handlers", "GetInfo,Health.Check", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["broken"] == 0 and record["unknown_or_internal"] == 0 and record["complete"]
    assert set(record["handlers"]) == {"GetInfo", "Health.Check"}
    assert record["handlers"]["GetInfo"]["requests"] == 25
    assert record["handlers"]["GetInfo"]["statuses"] == {"OK": 25}
    assert "Health.Check" in capsys.readouterr().out
