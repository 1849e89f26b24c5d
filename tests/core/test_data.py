import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from paradis_tf.data import load_fashion_mnist, load_image_folder, load_source, make_dataset, preprocess, read_idx
from paradis_tf.errors import DatasetError, InputError


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_reader_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", a)
    write_idx(tmp_path / "b-idx3-ubyte.gz", a, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "b-idx3-ubyte"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", a)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="expected 24 values"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_debian_package():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist() == [1000] * 10
    xs, _ = load_fashion_mnist("train", limit=5)
    assert xs.shape == (5, 28, 28, 1)


def test_missing_dataset_names_the_apt_package(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split='val'"):
        load_fashion_mnist("val")


def test_image_folder_loader(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            img = rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / cls / f"{i}.png"), tf.io.encode_png(img))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    x, y, classes = load_image_folder(tmp_path, (8, 8), channels=1)
    assert classes == ["cat", "dog"] and x.shape == (6, 8, 8, 1) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    xtr, _, _ = load_source(None, str(tmp_path), "train", (8, 8, 3), holdout=0.34)
    xte, _, _ = load_source(None, str(tmp_path), "test", (8, 8, 3), holdout=0.34)
    assert len(xtr) + len(xte) == 6 and len(xte) == 2
    with pytest.raises(DatasetError, match="no class sub-directories"):
        load_image_folder(tmp_path / "cat", (8, 8))
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "missing", (8, 8))


def test_pipeline_preprocesses_and_checks_input():
    x = np.full((10, 4, 4, 1), 255, np.uint8)
    y = np.arange(10)
    batches = list(make_dataset(x, y, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert float(batches[0][0].numpy().max()) == pytest.approx(1.0)
    aug = list(make_dataset(x, y, batch_size=4, training=True, augment=True))
    assert [b[0].shape[0] for b in aug] == [4, 4] and aug[0][0].shape[1:] == (4, 4, 1)
    np.testing.assert_allclose(preprocess(x[:1]), 1.0)
    with pytest.raises(InputError, match="uint8"):
        make_dataset(x.astype("float32"), y)
    with pytest.raises(InputError, match="3 labels for 10 images"):
        make_dataset(x, y[:3])
    with pytest.raises(InputError, match="uint8"):
        preprocess(np.zeros((1, 2, 2, 1), "float64"))


def test_pipeline_autotune_is_off_by_default_and_changes_no_batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 6, 6, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 96)
    off = make_dataset(x, y, batch_size=16, training=True, seed=5)
    on = make_dataset(x, y, batch_size=16, training=True, seed=5, autotune=True)
    assert off.options().autotune.enabled is False
    assert on.options().autotune.enabled is not False
    assert make_dataset(x, None, batch_size=16).options().autotune.enabled is False
    got_off, got_on = list(off), list(on)
    assert len(got_off) == len(got_on) == 6
    for (xa, ya), (xb, yb) in zip(got_off, got_on):
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    # shuffled (not the file order), every image once per epoch, preprocessed
    labels = np.concatenate([b[1].numpy() for b in got_off])
    assert not np.array_equal(labels, y) and sorted(labels) == sorted(y)
    assert float(np.concatenate([b[0].numpy() for b in got_off]).max()) <= 1.0


@pytest.mark.parametrize("translate, erase", [("batch", 0.0), ("image", 0.5)])
@pytest.mark.slow
def test_augmented_batches_are_a_function_of_the_seed(translate, erase):
    """Flips, shifts and erasures come from stateless ops on seeded per-batch draws: the same seeds give the same
    batches (autotune on or off, whatever order the parallel map runs in), every epoch its own draws."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (160, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 160)

    def two_epochs(seed, autotune, global_seed=7):
        tf.random.set_seed(global_seed)
        ds = make_dataset(x, y, 32, training=True, augment=True, seed=seed, translate=translate, erase=erase,
                          autotune=autotune)
        return [b[0].numpy() for b in ds] + [b[0].numpy() for b in ds]

    first = two_epochs(5, False)
    assert len(first) == 10
    for again in (two_epochs(5, False), two_epochs(5, True)):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    plain = [b[0].numpy() for b in make_dataset(x, y, 32, training=True, seed=5)]
    assert not any(np.array_equal(a, b) for a, b in zip(first, plain))  # augmented at all
    assert not any(np.array_equal(a, b) for a, b in zip(first[:5], first[5:]))  # new draws each epoch
    other = two_epochs(6, False)
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_random_erasing_replaces_one_rectangle_with_noise_in_the_input_range():
    """erase=1: every image gets exactly one solid rectangle of noise (2-40% of it); the rest is untouched."""
    x = np.full((64, 20, 20, 1), 128, np.uint8)
    y = np.zeros(64, int)
    (got, _), = make_dataset(x, y, batch_size=64, training=True, erase=1.0, seed=3).take(1)
    got = got.numpy()[..., 0]
    changed = got != np.float32(128 / 255.0)
    for img, c in zip(got, changed):
        rows, cols = np.nonzero(c.any(1))[0], np.nonzero(c.any(0))[0]
        box = c[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and c.sum() == box.size  # one filled rectangle
        assert 0.02 * 400 * 0.5 <= c.sum() <= 0.4 * 400 * 1.5
        assert img.min() >= 0.0 and img.max() <= 1.0
    assert len({tuple(np.argwhere(c)[0]) for c in changed}) > 10  # placed at random
    (kept, _), = make_dataset(x, y, batch_size=64, training=True, erase=0.0).take(1)
    assert (kept.numpy() == np.float32(128 / 255.0)).all()
    (half, _), = make_dataset(x, y, batch_size=64, training=True, erase=0.5, seed=1).take(1)
    assert 12 <= (half.numpy() != np.float32(128 / 255.0)).any(axis=(1, 2, 3)).sum() <= 52
    (test, _), = make_dataset(x, y, batch_size=64, erase=1.0).take(1)  # evaluation: never erased
    assert (test.numpy() == np.float32(128 / 255.0)).all()
    with pytest.raises(ValueError, match="erase=1.5"):
        make_dataset(x, y, erase=1.5)


def test_cli_train_recipe_defaults_follow_the_optimizer():
    from paradis_tf.cli import build_parser
    from paradis_tf.cli.cmd_train import train_config

    def config(*argv, n=None):
        return train_config(build_parser().parse_args(["train", "--out", "m.keras", *argv]), n)

    sgd = config(n=100)
    assert (sgd.optimizer, sgd.learning_rate, sgd.weight_decay, sgd.momentum) == ("sgd", 0.1, 0.005, 0.9)
    assert sgd.batch_size == 100 and sgd.warmup_epochs == 0.5
    adam = config("--optimizer", "adam")
    assert (adam.optimizer, adam.learning_rate, adam.weight_decay, adam.batch_size) == ("adam", 2e-3, 0.0, 128)
    given = config("--optimizer", "adam", "--lr", "0.01", "--weight-decay", "0")
    assert (given.learning_rate, given.weight_decay) == (0.01, 0.0)
    assert config("--weight-decay", "0").weight_decay == 0.0  # 0 given is not "silent"
    with pytest.raises(ValueError, match="momentum=1.5"):
        config("--momentum", "1.5")


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "m.keras"
    train = subprocess.run(
        [sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0,2x0.5",
         "--width", "0.25", "--depth", "1", "--layer-channels", "5,12", "--epochs", "1", "--batch-size", "64", "--limit", "256", "--json",
         "--switch-weight", "2x0.5=2", "--logit-scale", "--weight-decay", "0.05", "--teacher", "nested",
         "--teacher-of", "2x0.5=1x1.0", "--augment", "--translate", "image", "--erase", "0.5",
         "--temperature", "2.5", "--label-smoothing", "0.1",
         "--optimizer", "sgd", "--momentum", "0.8", "--lr", "0.05"],
        capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    result = json.loads(train.stdout[train.stdout.index("{"):])
    assert set(result["top1"]) == {"1x1.0", "2x0.5"} and out.exists()
    import keras

    import paradis_tf.models  # noqa: F401  (registers the classes for load_model)

    loaded = keras.saving.load_model(out)
    assert loaded.switch_weights == {"2x0.5": 2.0} and loaded.body.head.logit_scale and loaded.teacher == "nested"
    assert loaded.body.channel_counts == [6, 12]  # 5 rounded up to split between 2x0.5's two devices
    assert loaded.teacher_of == {"2x0.5": "1x1.0"} and loaded.temperature == 2.5 and loaded.label_smoothing == 0.1
    opt = loaded.optimizer  # the recipe's optimizer is saved with the model
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov and opt.momentum == 0.8 and opt.weight_decay == 0.05
    ev = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "eval", str(out), "--limit", "256", "--json", "--devices"],
                        capture_output=True, text=True, env=env, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    evaluated = json.loads(ev.stdout[ev.stdout.index("{"):])
    assert evaluated["top1"] == pytest.approx(result["top1"], abs=1e-6)
    assert list(evaluated["device_top1"]) == ["2x0.5"] and len(evaluated["device_top1"]["2x0.5"]) == 2
    assert all(0.0 <= a <= 1.0 for a in evaluated["device_top1"]["2x0.5"])
    bad = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "3x0.5"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 1 and bad.stderr.startswith("paradis: ") and "3x0.5" in bad.stderr
    bad_w = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0",
                            "--switch-weight", "1x1.0", "--limit", "256"], capture_output=True, text=True, env=env, timeout=600)
    assert bad_w.returncode == 1 and "paradis: --switch-weight expects SWITCH=WEIGHT" in bad_w.stderr and "'1x1.0'" in bad_w.stderr
    bad_wd = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0",
                             "--weight-decay", "-1", "--limit", "256"], capture_output=True, text=True, env=env, timeout=600)
    assert bad_wd.returncode == 1 and "weight_decay=-1.0" in bad_wd.stderr
    bad_m = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0",
                            "--optimizer", "sgd", "--momentum", "1", "--limit", "256"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert bad_m.returncode == 1 and "momentum=1.0" in bad_m.stderr
    bad_t = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0,1x0.5",
                            "--teacher-of", "1x0.5=1x0.25", "--limit", "256"], capture_output=True, text=True, env=env, timeout=600)
    assert bad_t.returncode == 1 and "teacher switch '1x0.25', which the model does not have" in bad_t.stderr
    bad_temp = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches",
                               "1x1.0,1x0.5", "--temperature", "0", "--limit", "256"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert bad_temp.returncode == 1 and "temperature=0.0" in bad_temp.stderr
    bad_ls = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches",
                             "1x1.0,1x0.5", "--label-smoothing", "1", "--limit", "256"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert bad_ls.returncode == 1 and "label_smoothing=1.0" in bad_ls.stderr
    bad_c = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0",
                            "--depth", "2", "--layer-channels", "8,16"], capture_output=True, text=True, env=env, timeout=600)
    assert bad_c.returncode == 1 and "--layer-channels 8,16: pass 3 positive whole numbers" in bad_c.stderr
    bad_r = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "train", "--out", str(out), "--switches", "1x1.0",
                            "--arch", "resnet", "--layer-channels", "8,16"], capture_output=True, text=True, env=env, timeout=600)
    assert bad_r.returncode == 1 and "only --arch mobilenet_v1 takes channels per layer" in bad_r.stderr
    missing = subprocess.run([sys.executable, "-m", "paradis_tf.cli", "eval", str(tmp_path / "none.keras")],
                             capture_output=True, text=True, env=env, timeout=600)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def _shifts(batch):
    """The (row, column) centre of the bright square in each image of a batch."""
    return {tuple(np.argwhere(img[..., 0] > 0.5).mean(0)) for img in batch.numpy()}


def test_translation_shifts_the_whole_batch_or_each_image():
    """An 8x8 square in the middle of 28x28 images: 'batch' moves all images alike, 'image' each its own
    way, up to 2 pixels (28 // 14) in each direction; flipping never moves a centred square."""
    x = np.zeros((256, 28, 28, 1), np.uint8)
    x[:, 10:18, 10:18] = 255
    y = np.zeros(256, int)
    for b, _ in make_dataset(x, y, batch_size=128, training=True, augment=True, seed=1):
        assert len(_shifts(b)) == 1
    (b, _), = make_dataset(x, y, batch_size=256, training=True, augment=True, seed=1, translate="image").take(1)
    centres = np.array(sorted(_shifts(b)))
    assert len(centres) > 15  # 25 possible shifts, 256 draws
    assert centres.min() >= 13.5 - 2 and centres.max() <= 13.5 + 2
    assert float(b.numpy().sum()) == pytest.approx(256 * 64)  # shifted, never cut: 2 px of padding suffice
    with pytest.raises(ValueError, match="translate one of batch, image.*Received translate='pixel'"):
        make_dataset(x, y, training=True, augment=True, translate="pixel")


def test_a_corrupt_image_names_its_file(tmp_path):
    import tensorflow as tf

    (tmp_path / "ok").mkdir()
    tf.io.write_file(str(tmp_path / "ok" / "a.png"), tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "b.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(DatasetError) as e:
        load_image_folder(tmp_path, (8, 8), channels=1)
    assert str(e.value).startswith(f"{tmp_path / 'bad' / 'b.jpg'} could not be decoded as an image")
    assert "function_node" not in str(e.value) and "Op:" not in str(e.value)


def test_classes_match_the_model_by_label_name_or_by_count():
    from paradis_tf.data import FASHION_MNIST_LABELS, match_classes

    y = np.array([0, 1, 1, 0])
    # folder names may spell a label without its punctuation, and hold a subset of the classes
    np.testing.assert_array_equal(match_classes(["Bag", "t-shirt_top"], y, FASHION_MNIST_LABELS, 10, "d"), [8, 0, 0, 8])
    np.testing.assert_array_equal(match_classes(["a", "b"], y, None, 2, "d"), y)
    np.testing.assert_array_equal(match_classes(["a", "b"], y, ["x", "y"], 2, "d"), y)
    with pytest.raises(DatasetError, match=r"--data d has 2 classes \(a, b\) but the model predicts 10 "
                                           r"\(T-shirt/top, Trouser, Pullover, Dress, \.\.\.\)"):
        match_classes(["a", "b"], y, FASHION_MNIST_LABELS, 10, "--data d")
