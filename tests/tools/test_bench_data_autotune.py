"""The autotune benchmark: its refusals, and a real side-by-side run on a few batches."""

import json

import pytest

TOOL = "bench_data_autotune"  # the `bench` fixture loads it


@pytest.mark.parametrize("argv, message", [
    (["--models", "3x0.5"], "--models '3x0.5': pass a switch text such as 1x0.25, or 'paradis'"),
    (["--epochs", "1"], "--epochs 1: pass 2 or more"),
    (["--rounds", "0"], "--rounds 0: pass 1 or more"),
    (["--train-images", "64"], "--train-images 64: pass at least one batch"),
])
def test_bad_options_are_named(bench, tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(argv + ["--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_two_pinned_trainings_record_every_epoch(bench, tmp_path):
    out = tmp_path / "autotune.json"
    assert bench.main(["--models", "1x0.25", "--epochs", "2", "--train-images", "256", "--width", "0.25",
                       "--depth", "2", "--rounds", "2", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    r = got["models"]["1x0.25"]
    assert got["train_images"] == 256 and set(r["epochs"]) == {"on", "off"}
    for setting, rows in r["epochs"].items():
        assert [(e["round"], e["epoch"]) for e in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert all(e["wall"] > 0 and e["cpu"] > 0 for e in rows)
        assert rows[0]["core"] != rows[2]["core"]  # the second round swaps the cores
    assert r["epochs"]["on"][0]["core"] != r["epochs"]["off"][0]["core"]  # side by side, a core each
    assert r["wall_on_over_off"] == pytest.approx(r["median_epoch_seconds"]["on"]["wall"]
                                                  / r["median_epoch_seconds"]["off"]["wall"])
    assert "--train-images 256" in got["command"]
