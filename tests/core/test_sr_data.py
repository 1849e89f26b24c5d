"""Super-resolution data: scikit-image's photographs split by image, LR/HR patches, a user's folder, PSNR and SSIM."""

import numpy as np
import pytest

from paradis_tf.data import sr
from paradis_tf.errors import DatasetError, InputError


@pytest.fixture(scope="module")
def photos():
    return sr.load_skimage_images()


def thumbnail(img, size=32):
    y = sr.to_y(img)
    h, w = y.shape
    t = y[: h - h % size, : w - w % size].reshape(size, h // size, size, w // size).mean(axis=(1, 3))
    return (t - t.mean()) / (t.std() + 1e-9)


def test_split_is_by_image_disjoint_and_covers_every_photograph(photos):
    train, val = set(sr.TRAINING_IMAGES), set(sr.VALIDATION_IMAGES)
    assert not train & val and train | val == set(sr.SKIMAGE_IMAGES) and len(val) >= 3
    assert set(photos) == set(sr.SKIMAGE_IMAGES)
    # no validation photograph is (nearly) a training one: `cat` is `chelsea`, the motorcycles are a stereo pair
    for v in val:
        for t in train:
            if photos[v].shape == photos[t].shape:
                assert not np.array_equal(photos[v], photos[t]), (v, t)
            corr = float(np.mean(thumbnail(photos[v]) * thumbnail(photos[t])))
            assert corr < 0.65, (v, t, corr)  # the stereo pair: 0.73; the closest held-out pair: 0.53
    assert set(sr.load_sr_split("validation", channels=1)) == val


def test_photographs_are_read_from_the_installed_package(photos):
    import skimage.data

    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and min(img.shape[:2]) >= 172, name
        assert img.std() > 10, name
    # gray photographs become RGB by repetition, RGB ones stay as shipped
    assert np.array_equal(photos["camera"], np.repeat(skimage.data.camera()[..., None], 3, axis=-1))
    assert np.array_equal(photos["astronaut"], skimage.data.astronaut())


def test_y_channel_is_bt601_studio_range():
    import skimage.color

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_allclose(sr.to_y(rgb), skimage.color.rgb2ycbcr(rgb)[..., 0], atol=1e-9)
    corners = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    assert sr.sr_image(corners, 1)[..., 0].tolist() == [[16, 235]]
    gray = np.array([[0, 128, 255]], np.uint8)
    assert sr.sr_image(gray, 1)[..., 0].tolist() == [[16, 126, 235]]  # 16 + 219 * g / 255, as R = G = B = g
    # float pixels in [0, 1] give the same Y as their uint8 values
    np.testing.assert_allclose(sr.to_y(rgb.astype(np.float32) / 255), sr.to_y(rgb), atol=1e-4)


def test_training_patches_shapes_ranges_and_alignment(photos):
    train = {k: photos[k] for k in ("rocket", "coins", "brick")}
    ds = sr.make_sr_dataset(train, 2, patch_size=12, batch_size=6, seed=3, steps=4)
    batches = [(lr.numpy(), hr.numpy()) for lr, hr in ds]
    assert len(batches) == 4
    for lr, hr in batches:
        assert lr.shape == (6, 12, 12, 3) and hr.shape == (6, 24, 24, 3)
        assert lr.dtype == np.float32 and hr.dtype == np.float32
        assert 0.0 <= lr.min() and lr.max() <= 1.0 and 0.0 <= hr.min() and hr.max() <= 1.0
        for lo, hi in zip(lr, hr):
            # the LR patch is the HR patch downscaled (away from the patch border, where the whole image's
            # downscale read pixels outside the patch), whatever flip or rotation both got
            mine = sr.downscale(np.round(hi * 255).astype(np.uint8), 2).astype(int)
            assert np.abs(mine[2:-2, 2:-2] - np.round(lo * 255).astype(int)[2:-2, 2:-2]).max() <= 1
    # the same seed gives the same patches; the next pass over the dataset new ones
    again = [(lr.numpy(), hr.numpy()) for lr, hr in sr.make_sr_dataset(train, 2, patch_size=12, batch_size=6,
                                                                       seed=3, steps=4)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    second = [lr.numpy() for lr, _ in ds]
    assert not np.array_equal(second[0], batches[0][0])


def test_flips_and_rotations_all_occur():
    """A ramp image: the HR patch's gradient direction tells which of the 8 transforms a patch got."""
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([yy * 2, xx * 3, np.zeros_like(xx)], -1).astype(np.uint8)
    seen = set()
    for lr, hr in sr.make_sr_dataset([img], 2, patch_size=8, batch_size=32, seed=0, steps=2):
        for h in hr.numpy():
            r, g = h[..., 0], h[..., 1]
            seen.add((int(np.sign(r[-1, 0] - r[0, 0])), int(np.sign(r[0, -1] - r[0, 0])),
                      int(np.sign(g[0, -1] - g[0, 0])), int(np.sign(g[-1, 0] - g[0, 0]))))
    assert len(seen) == 8


def test_validation_patches_tile_every_image_in_order(photos):
    val = {k: photos[k] for k in ("chelsea", "coffee")}
    ds = sr.make_sr_dataset(val, 3, patch_size=20, batch_size=16, training=False)
    lr = np.concatenate([b[0].numpy() for b in ds])
    hr = np.concatenate([b[1].numpy() for b in ds])
    counts = [(img.shape[0] // 3 // 20) * (img.shape[1] // 3 // 20) for img in val.values()]
    assert len(lr) == len(hr) == sum(counts)
    lr0, hr0 = sr.sr_pairs({"chelsea": val["chelsea"]}, 3)["chelsea"]
    np.testing.assert_allclose(lr[1], lr0[:20, 20:40] / 255.0, atol=1e-6)
    np.testing.assert_allclose(hr[1], hr0[:60, 60:120] / 255.0, atol=1e-6)


def test_downscale_is_bicubic_as_pil_and_matlab(photos):
    from PIL import Image

    for scale in (2, 3, 4):
        hr = sr.modcrop(photos["astronaut"], scale)
        assert hr.shape[0] % scale == 0 and hr.shape[1] % scale == 0
        lr = sr.downscale(hr, scale)
        assert lr.dtype == np.uint8 and lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
        pil = np.asarray(Image.fromarray(hr).resize(lr.shape[1::-1], Image.BICUBIC)).astype(int)
        box = np.asarray(Image.fromarray(hr).resize(lr.shape[1::-1], Image.BOX)).astype(int)
        assert np.abs(lr.astype(int) - pil).mean() < 0.3, scale  # PIL rounds its weights to 8 bits
        assert np.abs(lr.astype(int) - box).mean() > 1.0, scale  # an area average is measurably different
        up = sr.bicubic_upscale(lr, scale)
        assert up.shape == hr.shape and 25 < sr.psnr(hr, up, scale) < 40


def test_psnr_matches_its_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(20, 200, (40, 50, 1), dtype=np.uint8)
    assert sr.psnr(y, y, 2) == float("inf")
    shifted = y + np.uint8(5)
    assert sr.psnr(y, shifted, 2) == pytest.approx(10 * np.log10(255 ** 2 / 25), abs=1e-9)
    noise = rng.normal(0, 8, y.shape)
    noisy = y.astype(np.float64) + noise
    expected = 10 * np.log10(255 ** 2 / np.mean(noise[2:-2, 2:-2] ** 2))
    assert sr.psnr(y, noisy / 255.0, 2) == pytest.approx(expected, abs=1e-6)
    assert sr.psnr(y, noisy / 255.0, 2) == pytest.approx(10 * np.log10(255 ** 2 / 64), abs=0.3)
    # the border of `scale` pixels does not count
    edged = y.copy()
    edged[:3, :, 0] = 0
    assert sr.psnr(y, edged, 3) == float("inf") and sr.psnr(y, edged, 2) < 40
    # RGB is compared on Y: a change of chroma that keeps Y does not count
    rgb = np.repeat(y, 3, axis=-1).astype(np.float64) / 255
    tint = rgb + np.array([0.02, 0.0, -0.02 * 65.481 / 24.966]) * 0.5
    assert sr.psnr(rgb, tint, 2) > 80


def test_ssim_is_one_for_identical_images_and_is_skimages_on_y(photos):
    from skimage.metrics import structural_similarity

    hr = photos["coffee"][:120, :160]
    assert sr.ssim(hr, hr, 2) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(hr + np.random.default_rng(1).normal(0, 10, hr.shape), 0, 255).astype(np.uint8)
    got = sr.ssim(hr, noisy, 2)
    ry, ty = sr.to_y(hr)[2:-2, 2:-2], sr.to_y(noisy)[2:-2, 2:-2]
    ref = structural_similarity(ry, ty, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert got == pytest.approx(ref, abs=1e-12) and 0.3 < got < 0.99
    assert sr.ssim(hr, np.clip(hr.astype(int) + 40, 0, 255).astype(np.uint8), 2) < 1.0


def write_png(path, array):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


def test_a_users_folder_of_images(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (50, 30, 1), dtype=np.uint8)
    rgba = rng.integers(0, 256, (36, 36, 4), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    write_png(tmp_path / "b.png", gray)
    write_png(tmp_path / "more" / "c.png", rgba)
    (tmp_path / "notes.txt").write_text("not an image")
    images = sr.load_image_dir(tmp_path)
    assert list(images) == ["a.png", "b.png", "more/c.png"]
    assert np.array_equal(images["a.png"], rgb)
    assert np.array_equal(images["b.png"], np.repeat(gray, 3, axis=-1))
    assert np.array_equal(images["more/c.png"], rgba[..., :3])
    y = sr.load_image_dir(tmp_path, channels=1)
    assert y["a.png"].shape == (40, 60, 1) and np.array_equal(y["a.png"], sr.sr_image(rgb, 1))
    train, val = sr.load_sr_split("train", tmp_path), sr.load_sr_split("validation", tmp_path)
    assert len(val) == 1 and len(train) == 2 and not set(train) & set(val)
    assert sr.load_sr_split("validation", tmp_path).keys() == val.keys()  # fixed by the seed
    ds = sr.make_sr_dataset(train, 2, patch_size=8, batch_size=4, steps=1)
    lr, hr = next(iter(ds))
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (4, 16, 16, 3)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        sr.load_image_dir(tmp_path / "missing")
    with pytest.raises(DatasetError, match="holds no images"):
        sr.load_image_dir(tmp_path)
    write_png(tmp_path / "only.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match="holds 1 image; a split by image needs at least 2"):
        sr.load_sr_split("train", tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"broken\.png could not be decoded"):
        sr.load_image_dir(tmp_path)


def test_bad_input_names_what_was_received_and_what_is_expected(photos):
    two = np.zeros((30, 30, 2), np.uint8)
    with pytest.raises(InputError, match=r"odd: expected a uint8 image of shape .*\(H, W, 3\) \(RGB\).*"
                                         r"Received uint8 array of shape \(30, 30, 2\)"):
        sr.sr_image(two, 3, "odd")
    with pytest.raises(InputError, match=r"image 0: expected a uint8 image of shape \(H, W, 1\) \(Y\) or "
                                         r"\(H, W, 3\) \(RGB\).*Received uint8 array of shape \(30, 30, 2\)"):
        sr.make_sr_dataset([two], 2, patch_size=4)
    with pytest.raises(InputError, match=r"page: expected at least 200x200 pixels \(patch_size=50 times scale=4\)\. "
                                         r"Received 191x384"):
        sr.make_sr_dataset({"page": photos["page"], "brick": photos["brick"]}, 4, patch_size=50)
    with pytest.raises(InputError, match=r"b: expected 3 channel\(s\) like a\. Received shape \(40, 40, 1\)"):
        sr.make_sr_dataset({"a": np.zeros((40, 40, 3), np.uint8), "b": np.zeros((40, 40, 1), np.uint8)}, 2,
                           patch_size=4)
    with pytest.raises(InputError, match=r"positive multiples of scale=3.*Received 31x30"):
        sr.downscale(np.zeros((31, 30, 3), np.uint8), 3)
    with pytest.raises(InputError, match=r"same shape\. Received reference \(20, 20, 3\) and test \(20, 20, 1\)"):
        sr.psnr(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 1), np.uint8), 2)
    with pytest.raises(InputError, match=r"reference: expected one image .*Received uint8 array of shape "
                                         r"\(2, 20, 20, 3\)"):
        sr.psnr(np.zeros((2, 20, 20, 3), np.uint8), np.zeros((2, 20, 20, 3), np.uint8), 2)
    with pytest.raises(InputError, match=r"at least 19x19 pixels \(11 after cropping a border of scale=4\)\. "
                                         r"Received 16x40"):
        sr.ssim(np.zeros((16, 40, 1), np.uint8), np.zeros((16, 40, 1), np.uint8), 4)
    with pytest.raises(ValueError, match="scale=1"):
        sr.sr_pairs([photos["brick"]], 1)
    with pytest.raises(DatasetError, match="'cat' is not one of the photographs"):
        sr.load_skimage_images(["cat"])
    with pytest.raises(ValueError, match="split='test'"):
        sr.load_sr_split("test")
