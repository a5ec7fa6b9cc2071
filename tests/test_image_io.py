"""models/pose_input.py: every bad image gives one clear InputError; every mode comes out RGB."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from models import pose_input
from models.errors import InputError
from models.pose_input import load_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height`, with a few bytes of pixel data (not decodable whole)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """`im` encoded as `fmt` bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    """A seeded noise image (so JPEG data is not all header)."""
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def refuse(src, words: str) -> str:
    """Assert `load_image(src)` raises one InputError sentence containing `words`; returns it."""
    with pytest.raises(InputError, match=words) as err:
        load_image(src)
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


# -- bad inputs ------------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    refuse(tmp_path / "empty.png", "empty")
    refuse(b"", "empty")


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    refuse(tmp_path / "notes.jpg", "not an image")


def test_truncated_jpeg(tmp_path):
    data = encode(noise(256, 256), "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 6 // 10])
    refuse(tmp_path / "cut.jpg", "truncated")
    refuse(Image.open(tmp_path / "cut.jpg"), "truncated")  # a lazily opened PIL image too


def test_missing_file_and_folder(tmp_path):
    refuse(tmp_path / "nope.png", "no file")
    refuse(tmp_path, "folder")


@pytest.mark.parametrize("size", [(1, 1), (8, 200)])
def test_tiny_image(size):
    refuse(Image.new("RGB", size), "too small")
    refuse(encode(Image.new("RGB", size)), "too small")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_png_refused_from_its_header_before_decoding():
    data = png_header_only(12000, 12000)
    start = time.perf_counter()
    message = refuse(data, "12000 x 12000")
    assert time.perf_counter() - start < 0.5
    assert "truncated" not in message  # the pixel data (which is broken) was never decoded


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_and_pil_bomb_guard():
    """One limit, named in every message: a header over it, and one past PIL's own bomb guard."""
    side = f"{pose_input.MAX_IMAGE_SIDE} pixels a side"
    assert "12000 x 12000 pixels" in refuse(png_header_only(12000, 12000), side)  # the bomb
    refuse(png_header_only(5000, 40), side)
    refuse(png_header_only(8000, 30000), side)  # past PIL's own DecompressionBombError limit


def test_bomb_is_refused_from_the_header_before_decoding(tmp_path):
    """A real 12,000 x 12,000 PNG (a few hundred KB) is refused quickly, without decoding its 144 megapixels."""
    import time
    import tracemalloc

    path = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(path, optimize=False)
    tracemalloc.start()
    started = time.perf_counter()
    refuse(path, "12000 x 12000")
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 20 * 2**20, (seconds, peak)


def test_sixteen_bit_png_keeps_its_picture(tmp_path):
    """A 16-bit greyscale PNG is scaled to 8 bits (dark stays dark), not shown as near-white."""
    arr = np.zeros((64, 64), np.uint16)
    arr[:, 32:] = 65535
    path = tmp_path / "sixteen.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    got = np.asarray(load_image(path))
    assert got.shape == (64, 64, 3) and got[:, :32].max() == 0 and got[:, 32:].min() == 255


def test_byte_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(pose_input, "MAX_IMAGE_BYTES", 1000)
    data = encode(noise(128, 128))
    (tmp_path / "big.png").write_bytes(data)
    refuse(tmp_path / "big.png", "MB")
    refuse(data, "MB")


def test_wrong_types():
    refuse(12, "file path")
    refuse(np.zeros((20, 20, 2), np.uint8), "shape")
    refuse(np.full((20, 20), np.nan), "finite")


# -- good inputs in every form ---------------------------------------------------------------------
def test_path_bytes_pil_and_array_agree(tmp_path):
    im = noise()
    (tmp_path / "a.png").write_bytes(encode(im))
    want = np.asarray(im)
    for src in (tmp_path / "a.png", str(tmp_path / "a.png"), encode(im), im, want):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (64, 48)
        assert np.array_equal(np.asarray(out), want)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert tuple(load_image(data).getpixel((5, 5))) == (255, 0, 0)


@pytest.mark.parametrize(
    ("make", "pixel"),
    [
        (lambda: Image.new("RGBA", (32, 32), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (lambda: Image.new("RGBA", (32, 32), (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: Image.new("LA", (32, 32), (0, 0)), (255, 255, 255)),
        (lambda: Image.new("L", (32, 32), 100), (100, 100, 100)),
        (lambda: Image.new("1", (32, 32), 1), (255, 255, 255)),
        (lambda: Image.new("RGB", (32, 32), (0, 204, 0)).convert("P"), (0, 204, 0)),
        (lambda: Image.new("CMYK", (32, 32), (0, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.fromarray(np.full((32, 32), 65535, np.uint16)), (255, 255, 255)),  # I;16
        (lambda: Image.fromarray(np.full((32, 32), 32896, np.uint16)), (128, 128, 128)),
        (lambda: Image.fromarray(np.full((32, 32), 40000, np.int32)), (156, 156, 156)),  # I, 16-bit data
        (lambda: Image.fromarray(np.full((32, 32), 0.5, np.float32)), (128, 128, 128)),  # F
    ],
)
def test_modes_become_rgb(make, pixel):
    im = make()
    for src in (im, encode(im, "TIFF" if im.mode in ("CMYK", "I", "F") else "PNG")):
        out = load_image(src)
        assert out.mode == "RGB"
        assert tuple(out.getpixel((3, 3))) == pytest.approx(pixel, abs=1)


def test_palette_with_transparency_on_white():
    im = Image.new("P", (32, 32), 0)
    im.putpalette([10, 20, 30] * 256)
    data = encode(im, "PNG", transparency=0)
    assert tuple(load_image(data).getpixel((1, 1))) == (255, 255, 255)


def test_exif_rotation_applied():
    im = Image.new("RGB", (60, 30), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 30, 30))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_image(encode(im, "JPEG", exif=exif, quality=95))
    assert out.size == (30, 60)
    r, g, _ = out.getpixel((15, 10))  # the red half is now on top
    assert r > 200 and g < 60


def test_arrays_of_other_dtypes():
    assert load_image(np.ones((20, 20, 4), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((20, 20), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.ones((20, 20), bool)).getpixel((0, 0)) == (255, 255, 255)


def test_looks_like_image(tmp_path):
    (tmp_path / "pose.json").write_text("{}")
    (tmp_path / "photo.dat").write_bytes(encode(noise(), "JPEG"))
    assert not pose_input.looks_like_image(tmp_path / "pose.json")
    assert pose_input.looks_like_image(tmp_path / "photo.dat")
