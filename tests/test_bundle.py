"""paradis_tf.bundle: validation on load (naming file and problem), atomic writing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "runtime"))

from tiny_paradis import TinyParaDiS, images  # noqa: E402

from paradis_tf.bundle import MANIFEST, BundleError, BundleWriter, SegmentRef, load, segment_order, update_accuracy  # noqa: E402
from paradis_tf.errors import ParaDiSError  # noqa: E402


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    from paradis_tf.convert import convert_model

    out = tmp_path_factory.mktemp("b") / "bundle"
    convert_model(TinyParaDiS(switches=("2x0.5",)), out, images(16), calib_samples=16, sequential=(2,), num_threads=1)
    return out


@pytest.fixture
def copy(bundle_dir, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def _edit(root: Path, fn) -> None:
    m = json.loads((root / MANIFEST).read_text())
    fn(m)
    (root / MANIFEST).write_text(json.dumps(m))


def _refused(root: Path, fn, match: str) -> None:
    """Edits the manifest with ``fn``; `load` must refuse it with an error matching ``match``."""
    _edit(root, fn)
    with pytest.raises(BundleError, match=match):
        load(root)


@pytest.mark.slow
def test_a_converted_bundle_loads_with_every_file_listed(bundle_dir):
    b = load(bundle_dir)
    assert list(b.plans) == ["2x0.5", "seq-2"]
    assert b.model.input_shape == (8, 8, 1) and b.model.num_classes == 4
    plan = b.plan("2x0.5")
    assert plan.kind == "paradis" and plan.widths == (0.5, 0.5)
    assert plan.fusion.outputs == (SegmentRef(0, 0), SegmentRef(1, 0))
    seg = plan.devices[1].segments[0]
    assert seg.file == "switches/2x0.5/device-1/segment-0.tflite"
    assert {seg.file, seg.tflm.cc, seg.tflm.h} <= set(b.files)
    on_disk = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file()} - {MANIFEST}
    assert on_disk == set(b.files)
    seq = b.plan("seq-2")
    assert seq.kind == "sequential" and seq.devices[1].segments[0].inputs[0].source == SegmentRef(0, 0)
    assert seq.fusion.outputs == (SegmentRef(1, 0),) and not any(seq.fusion.bias)
    assert b.plan("2x0.50") is plan
    # the schema objects give back the manifest they were read from
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    assert {name: p.to_json() for name, p in b.plans.items()} == raw["plans"]
    assert b.model.to_json() == raw["model"] and {k: f.to_json() for k, f in b.files.items()} == raw["files"]


def test_segment_order_runs_in_rounds_and_refuses_cycles():
    a0, a1, b0, b1 = SegmentRef(0, 0), SegmentRef(0, 1), SegmentRef(1, 0), SegmentRef(1, 1)
    # a sync point: segment 1 of each device reads segment 0 of both
    assert segment_order({b1: [a0, b0], a1: [a0, b0], b0: [None], a0: [None]}) == [a0, b0, a1, b1]
    # a pipeline: device 1 waits for device 0
    assert segment_order({b0: [a0], a0: [None]}) == [a0, b0]
    with pytest.raises(BundleError, match=r"plan 'p': segment inputs form a cycle among \['device 0 segment 0', 'device 1 segment 0'\]"):
        segment_order({a0: [b0], b0: [a0]}, "plan 'p'")


def test_missing_manifest_or_directory(tmp_path):
    with pytest.raises(BundleError, match="not a bundle directory"):
        load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest.json: missing"):
        load(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest.json: not valid JSON"):
        load(tmp_path)


def test_unknown_schema_version_is_refused(copy):
    _refused(copy, lambda m: m.update(schema_version=2), r"manifest.json: unknown schema_version 2; this paradis_tf reads version 1")


def test_missing_file_is_named(copy):
    (copy / "switches/2x0.5/device-1/segment-0.tflite").unlink()
    with pytest.raises(BundleError, match=r"switches/2x0.5/device-1/segment-0.tflite: missing"):
        load(copy)


def test_sha256_mismatch_is_named(copy):
    path = copy / "switches/2x0.5/device-0/segment-0.cc"
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"device-0/segment-0.cc: sha256 mismatch"):
        load(copy)
    load(copy, verify=False)  # the structure alone is still fine


def test_size_mismatch_is_named(copy):
    with open(copy / "switches/seq-2/device-1/segment-0.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"seq-2/device-1/segment-0.tflite: size mismatch"):
        load(copy)


def test_input_naming_a_segment_that_does_not_exist(copy):
    def bad(m):
        m["plans"]["seq-2"]["devices"][1]["segments"][0]["inputs"][0]["source"] = {"device": 0, "segment": 3}

    _refused(copy, bad, r"manifest.json: plans\['seq-2'\].devices\[1\].segments\[0\].inputs\[0\].source: names segment 3 of device 0")
    _refused(copy, lambda m: m["plans"]["2x0.5"]["fusion"]["outputs"].append({"device": 5, "segment": 0}),
             r"fusion.outputs\[2\]: names device 5, but plan '2x0.5' has 2 device")


def test_shape_that_disagrees_with_the_model_file(copy):
    def bad(m):
        seg = m["plans"]["2x0.5"]["devices"][0]["segments"][0]
        seg["output"]["shape"] = [1, 5]

    # the manifest is self-consistent except for the fusion width, which is checked first
    _refused(copy, bad, r"outputs shape \[1, 5\]; fusion needs \(N, 4\)")

    def bad_input(m):
        seg = m["plans"]["2x0.5"]["devices"][0]["segments"][0]
        seg["output"]["shape"] = [1, 4]
        seg["inputs"][0]["shape"] = [1, 8, 7, 1]

    _refused(copy, bad_input, r"device-0/segment-0.tflite: input 0 \('\w*in_00:0'\) is int8 \[1, 8, 8, 1\] in the model file, "
             r"but manifest.json says int8 \[1, 8, 7, 1\]")


def test_quantization_that_disagrees_with_the_model_file(copy):
    def bad(m):
        m["plans"]["2x0.5"]["devices"][1]["segments"][0]["output"]["zero_point"] += 1

    _refused(copy, bad, r"device-1/segment-0.tflite: output 0 .* is quantized as int8\(scale=")


def test_cycles_and_paths_outside_the_bundle_are_refused(copy):
    def cycle(m):
        m["plans"]["seq-2"]["devices"][0]["segments"][0]["inputs"][0]["source"] = {"device": 1, "segment": 0}

    _refused(copy, cycle, "cycle")

    def escape(m):
        m["plans"]["seq-2"]["devices"][0]["segments"][0]["inputs"][0]["source"] = "input"
        m["plans"]["seq-2"]["devices"][0]["segments"][0]["file"] = "../evil.tflite"

    _refused(copy, escape, r"'../evil.tflite' must be relative, normalised")


def test_missing_field_and_wrong_type_are_located(copy):
    _refused(copy, lambda m: m["plans"]["2x0.5"]["devices"][0].pop("macs"),
             r"plans\['2x0.5'\].devices\[0\]: missing required field 'macs'")
    _refused(copy, lambda m: m["plans"]["2x0.5"]["devices"][0].update(macs="many"),
             r"devices\[0\].macs: expected an integer, found str 'many'")


def test_writer_leaves_nothing_when_the_conversion_fails(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with BundleWriter(target) as w:
            w.add_file("switches/x/device-0/segment-0.tflite", b"TFL3")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_validates_before_renaming_and_keeps_the_old_bundle(bundle_dir, copy):
    before = (copy / MANIFEST).read_bytes()
    with pytest.raises(BundleError, match=r"refusing to write .*copy: .*copy/switches/.*: missing"):
        with BundleWriter(copy, overwrite=True) as w:
            manifest = json.loads(before)
            # files the manifest names but the new bundle does not hold
            w.commit(manifest)
    assert (copy / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy"]


def test_writer_replaces_only_bundles_and_only_when_asked(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="a bundle is already there"):
        BundleWriter(bundle_dir).__enter__()
    other = tmp_path / "notabundle"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(BundleError, match="holds no manifest.json; refusing to replace it"):
        BundleWriter(other, overwrite=True).__enter__()
    assert issubclass(BundleError, ParaDiSError)


def test_update_accuracy_merges_into_the_manifest(copy):
    update_accuracy(copy, {"2x0.5": {"float": 0.9, "int8": 0.89}})
    update_accuracy(copy, {"2x0.5": {"int8_tflm": 0.88}})
    b = load(copy)
    assert dict(b.plan("2x0.5").accuracy) == {"float": 0.9, "int8": 0.89, "int8_tflm": 0.88}
    with pytest.raises(BundleError, match="no plan '9x0.1'"):
        update_accuracy(copy, {"9x0.1": {"int8": 1.0}})
    assert np.isclose(load(copy).plan("2x0.5").accuracy["float"], 0.9)
