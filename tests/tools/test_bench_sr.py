"""tools/bench_sr.py: a real run at tiny sizes (training, conversion, int8 on LiteRT and TFLM, figure) and its table."""

import json

import numpy as np
import pytest

TOOL = "bench_sr"  # the `bench` fixture loads it

SWITCHES = ["1x1.0", "4x0.25", "1x0.25"]
CROP = 96  # HR centre crop of every validation photograph: 48x48 low-resolution pixels, two 24-pixel tiles a side


@pytest.fixture(scope="module")
def record(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_sr")
    argv = ["--channels", "8", "--blocks", "1", "--expansion", "2", "--patch", "12", "--batch", "4", "--steps", "2",
            "--steps-per-epoch", "2", "--switches", ",".join(SWITCHES), "--tile", "24", "--calib-samples", "4",
            "--crop", str(CROP), "--figure-size", "32", "--verbose", "0",
            "--out", str(out / "sr.json"), "--figure", str(out / "sr_crop.png")]
    assert bench.main(argv) == 0
    return json.loads((out / "sr.json").read_text()), out


@pytest.mark.slow
def test_record_has_the_issue_shape_and_numbers_of_a_real_run(bench, record):
    from paradis_tf.data.sr import VALIDATION_IMAGES, bicubic_upscale, load_sr_split, psnr, sr_pairs, ssim

    data, _ = record
    assert data["scale"] == 2 and data["switches"] == SWITCHES and data["backends"] == ["litert", "tflm"]
    assert data["validation_images"] == list(VALIDATION_IMAGES)
    assert all(v == [CROP, CROP] for v in data["validation_sizes"].values()), data["validation_sizes"]
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    assert set(rows) == {("bicubic", None)} | {(m, s) for m in ("paradis", "individual") for s in SWITCHES}
    for r in data["results"]:
        assert {"model", "switch", "psnr_float", "psnr_int8", "ssim_float", "macs_per_device"} <= set(r)

    # bicubic is data.sr's psnr/ssim of bicubic_upscale on the same (cropped) held-out photographs
    val = bench.centre_crop(load_sr_split("validation", channels=1), CROP)
    pairs = sr_pairs(val, 2).values()
    bic = rows[("bicubic", None)]
    assert bic["psnr_float"] == pytest.approx(np.mean([psnr(hr, bicubic_upscale(lr, 2), 2) for lr, hr in pairs]),
                                              abs=1e-9)
    assert bic["ssim_float"] == pytest.approx(np.mean([ssim(hr, bicubic_upscale(lr, 2), 2) for lr, hr in pairs]),
                                              abs=1e-9)

    devices = {"1x1.0": 1, "4x0.25": 4, "1x0.25": 1}
    for kind in ("paradis", "individual"):
        for s in SWITCHES:
            r = rows[(kind, s)]
            # evaluate_sr and sr_qcheck run the same float network on the whole image (a few pixels may round
            # apart); int8 stays near float on both backends
            assert r["psnr_float"] == pytest.approx(r["qcheck_float_psnr"], abs=0.01)
            assert 20 < r["psnr_float"] < 60 and 0 < r["ssim_float"] <= 1
            assert r["psnr_int8"] == r["psnr_int8_litert"]
            # (two training steps leave noise that int8 partly clips: the PSNRs may differ by a dB, the images
            # stay close to each other)
            assert abs(r["psnr_int8_litert"] - r["psnr_float"]) < 3.0, r
            assert r["psnr_vs_float_litert"] > 35 and r["psnr_vs_float_tflm"] > 35, r
            assert abs(r["psnr_int8_tflm"] - r["psnr_int8_litert"]) < 0.1, r
            assert set(r["images"]) == set(VALIDATION_IMAGES)
            assert len(r["macs_per_device"]) == len(r["params_per_device"]) == devices[s]
            assert all(m > 0 for m in r["macs_per_device"])
    full, quarter = rows[("paradis", "1x1.0")]["macs_per_device"][0], rows[("paradis", "4x0.25")]["macs_per_device"]
    assert max(quarter) < full / 2  # a quarter-width device runs a fraction of the network
    assert rows[("paradis", "1x0.25")]["macs_per_device"][0] == pytest.approx(quarter[0], rel=0.02)

    t = data["targets"]
    assert set(t) == {"over_bicubic", "near_individual", "four_over_one", "int8_near_float"}
    over = t["over_bicubic"]["margins_db"]
    assert over["1x1.0"] == pytest.approx(rows[("paradis", "1x1.0")]["psnr_float"] - bic["psnr_float"] - 1.0, abs=1e-3)
    assert t["over_bicubic"]["held"] == (min(over.values()) >= 0)
    assert set(t["int8_near_float"]["margins_db"]) == {f"{s} {b}" for s in SWITCHES for b in ("litert", "tflm")}
    assert t["four_over_one"]["held"] == (t["four_over_one"]["margin_db"] >= 0)
    assert {"paradis train", "paradis convert", "individual 1x0.25 train"} <= set(data["timing"]["phases"])


@pytest.mark.slow
def test_figure_and_table(bench, record, capsys):
    data, out = record
    png = (out / "sr_crop.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["figure"]["panels"] == ["bicubic", "1x0.25", "4x0.25", "1x1.0", "ground truth"]
    capsys.readouterr()
    assert bench.main(["--table", "--out", str(out / "sr.json")]) == 0
    text = capsys.readouterr().out
    rows = {(r["model"], r["switch"]): r for r in data["results"]}
    assert f"| 4x0.25 | {rows[('paradis', '4x0.25')]['psnr_float']:.2f} |" in text
    assert "| bicubic |" in text and "Targets (issue 37):" in text


def test_bad_options_are_refused_before_any_training(bench, tmp_path):
    with pytest.raises(SystemExit, match="--steps 150 must be a positive multiple of --steps-per-epoch 100"):
        bench.main(["--steps", "150", "--out", str(tmp_path / "sr.json")])
    with pytest.raises(SystemExit, match="--figure-image rocket: not a validation photograph; choose one of "
                                             "astronaut, camera"):
        bench.main(["--figure-image", "rocket", "--out", str(tmp_path / "sr.json")])
    assert not (tmp_path / "sr.json").exists()
