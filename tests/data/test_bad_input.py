"""Bad and unusual image files: each is either converted properly or skipped with a reason."""

from __future__ import annotations

import csv
import io
import logging

import numpy as np
import pytest
from PIL import Image

from deepclust.data import decode as decode_mod
from deepclust.data.decode import decode_image, probe_image_size, to_rgb_array
from deepclust.data.store import load_images, write_skipped_csv
from deepclust.errors import BadImageError, DataError


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reason(path) -> str:
    with pytest.raises(BadImageError) as info:
        decode_image(path, 8)
    return info.value.reason


# --------------------------------------------------------------------------- unusable files


def test_zero_byte_file_is_skipped(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert _reason(p).startswith("empty file")


@pytest.mark.parametrize("name", ["notes.txt", "fake.png", "fake.jpg"])
def test_text_files_are_not_images(tmp_path, name):
    p = tmp_path / name
    p.write_text("this is not an image\n" * 20)
    assert _reason(p).startswith("not an image")


def test_truncated_jpeg_is_reported_not_padded(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, "JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _reason(p).startswith("truncated")


def test_corrupt_png_data_is_skipped(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_noise(32, 32)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 8
    data[start:start + 200] = bytes(200)  # garbage inside the compressed pixel data
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    assert _reason(p).split(":")[0] in ("corrupt", "truncated")


def test_non_jpeg_above_full_decode_limit_is_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_FULL_DECODE_PIXELS", 50 * 50)
    p = tmp_path / "big.png"
    Image.fromarray(_noise(60, 60)).save(p)
    assert _reason(p).startswith("too large")


def test_bomb_guard_huge_jpeg_still_decoded_via_draft_but_png_skipped(tmp_path, monkeypatch):
    # Shrink Pillow's bomb limit so small files stand in for 200-megapixel ones.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    jpg, png = tmp_path / "huge.jpg", tmp_path / "huge.png"
    img = np.zeros((160, 160, 3), np.uint8)
    img[:, :80] = (255, 0, 0)
    Image.fromarray(img).save(jpg, quality=95)
    Image.fromarray(img).save(png)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(png)  # the situation decode_image must survive
    out = decode_image(jpg, 16)
    assert out.shape == (16, 16, 3)
    assert out[8, 2, 0] > 200 and out[8, 13, 2] < 60  # left red half survived the reduced decode
    assert _reason(png).startswith("too large")


# --------------------------------------------------------------------------- conversions


def test_grayscale_is_replicated_to_rgb(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(p)
    out = decode_image(p)
    assert out.shape == (8, 8, 3) and (out == 77).all()


def test_rgba_and_la_are_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:2, ..., 3] = 0  # top rows fully transparent (blue hidden underneath)
    rgba[2:, ..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    assert (out[:2] == 255).all()
    assert (out[2:] == (0, 0, 200)).all()

    la = np.stack([np.full((4, 4), 40, np.uint8), np.full((4, 4), 128, np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    out = decode_image(tmp_path / "la.png")
    expected = round(40 * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0  # index 0 (black) is transparent
    im.save(tmp_path / "p.png", transparency=0)
    out = decode_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 3]) == (255, 255, 255)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 257 * 10]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    out = decode_image(tmp_path / "deep.png")
    assert out[0, :, 0].tolist() == [0, 128, 255, 10]
    assert (out[..., 0] == out[..., 2]).all()


def test_mode_i_and_f_scaling():
    i_img = Image.fromarray(np.array([[0, 65535, 257 * 100]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb_array(i_img))[0, :, 1].tolist() == [0, 255, 100]
    f_img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb_array(f_img))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb_array(wide))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    out = decode_image(tmp_path / "cmyk.jpg", 8)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 30 and b < 30  # cyan 0, magenta+yellow full = red


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)  # 20 wide, 10 tall as stored
    stored[:, :10] = (255, 0, 0)  # left half red
    stored[:, 10:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif, quality=95)
    assert probe_image_size(p) == (10, 20)
    out = decode_image(p)
    assert out.shape == (20, 10, 3)  # upright: 10 wide, 20 tall
    top, bottom = out[:8].reshape(-1, 3).mean(0), out[12:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    square = decode_image(p, 10)  # the store path: draft, then transpose, then centre crop
    assert square.shape == (10, 10, 3)
    assert square[0].mean(0)[0] > 150 and square[-1].mean(0)[2] > 150


def test_non_square_is_resized_then_center_cropped(tmp_path):
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:40] = (0, 255, 0)
    img[:, 40:] = (0, 0, 255)
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3)
    assert (np.abs(out[:, 2:8].astype(int) - (0, 255, 0)).max()) <= 2  # only the centre third remains


# --------------------------------------------------------------------------- in a store


def _mixed_folder(root):
    root.mkdir()
    for i in range(3):
        Image.fromarray(_noise(12, 12, i)).save(root / f"good{i}.png")
    (root / "zero.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("hello")
    (root / "text.png").write_text("not a png")
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, "JPEG")
    (root / "cut.jpg").write_bytes(buf.getvalue()[:300])
    (root / ".hidden.png").write_bytes(b"ignored entirely")
    return root


def test_store_keeps_good_files_and_lists_skipped(tmp_path, caplog):
    root = _mixed_folder(tmp_path / "mixed")
    with caplog.at_level(logging.WARNING, logger="deepclust.data.store"):
        store = load_images(root, progress=False)
    assert len(store) == 3 and store.size == 12
    assert [p.rsplit("/", 1)[-1] for p in store.paths] == ["good0.png", "good1.png", "good2.png"]
    np.testing.assert_array_equal(store.images[1], _noise(12, 12, 1))
    reasons = {p.rsplit("/", 1)[-1]: r.split(":")[0] for p, r in store.skipped}
    assert reasons == {"zero.jpg": "empty file", "readme.txt": "not an image", "text.png": "not an image",
                       "cut.jpg": "truncated"}
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("skipped 4 of 7 files: 2 not an image, ")
    assert "1 empty file" in lines[0] and "1 truncated" in lines[0]

    out = write_skipped_csv(store, tmp_path / "skipped.csv")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "reason"]
    assert sorted(r[0].rsplit("/", 1)[-1] for r in rows[1:]) == ["cut.jpg", "readme.txt", "text.png", "zero.jpg"]


def test_unexpected_decoder_exception_skips_instead_of_crashing(tmp_path, monkeypatch):
    root = _mixed_folder(tmp_path / "mixed")
    from deepclust.data import store as store_mod

    real = store_mod.decode_image

    def flaky(path, size):
        if str(path).endswith("good1.png"):
            raise RuntimeError("decoder bug")
        return real(path, size)

    monkeypatch.setattr(store_mod, "decode_image", flaky)
    store = load_images(root, progress=False, workers=2)
    assert len(store) == 2
    assert any(p.endswith("good1.png") and r.startswith("unreadable: RuntimeError") for p, r in store.skipped)


def test_all_bad_source_raises_data_error_naming_it(tmp_path):
    root = tmp_path / "allbad"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    (root / "b.png").write_text("nope")
    with pytest.raises(DataError, match=r"no usable images in .*allbad.*all 2 files"):
        load_images(root, progress=False)
    assert not list((tmp_path / "cache" / "stores").glob("*"))  # nothing half-built left behind


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="no files found"):
        load_images(tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match="no such file or folder"):
        load_images(tmp_path / "does_not_exist", progress=False)
    with pytest.raises(DataError, match="not a folder, a .npz file"):
        load_images("not_a_dataset_name", progress=False)
