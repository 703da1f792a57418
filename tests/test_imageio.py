"""faceapp.imageio.load_image: formats, orientation, limits and clear errors."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceapp.errors import FaceAppError, ImageError
from faceapp.imageio import atomic_path, load_image

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def astro() -> Image.Image:
    return Image.open(DATA / "astronaut.jpg").convert("RGB").resize((160, 160), Image.LANCZOS)


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize(
    "fmt, suffix, tol",
    [("JPEG", ".jpg", 3.0), ("PNG", ".png", 0.0), ("WEBP", ".webp", 4.0), ("BMP", ".bmp", 0.0),
     ("TIFF", ".tiff", 0.0), ("GIF", ".gif", 12.0)],
)
def test_common_formats_load_as_rgb(tmp_path, astro, fmt, suffix, tol):
    path = tmp_path / f"photo{suffix}"
    astro.save(path, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    im = load_image(path)
    assert im.mode == "RGB" and im.size == astro.size
    assert _mad(im, astro) <= tol
    assert im.info["faceapp_name"] == path.name


def test_sources_path_bytes_file_pil_numpy(tmp_path, astro):
    path = tmp_path / "a.png"
    astro.save(path)
    ref = np.asarray(astro)
    for src in (str(path), path, path.read_bytes(), io.BytesIO(path.read_bytes()), astro, ref):
        im = load_image(src)
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), ref)
    assert load_image(astro) is not astro  # the caller's image is never handed back to be annotated


def test_rgba_flattens_on_white_and_grayscale_expands(astro):
    rgba = astro.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, :40, 3] = 0  # left strip transparent
    im = np.asarray(load_image(Image.fromarray(a, "RGBA")))
    assert (im[:, :40] == 255).all()
    np.testing.assert_array_equal(im[:, 40:], np.asarray(astro)[:, 40:])

    gray = np.asarray(load_image(astro.convert("L")))
    assert gray.shape == (160, 160, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # Palette image with a transparent index
    p = astro.convert("P")
    p.info["transparency"] = 0
    assert load_image(p).mode == "RGB"


def test_16bit_png_is_scaled_not_clipped(tmp_path, astro):
    g8 = np.asarray(astro.convert("L"))
    g16 = g8.astype(np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(g16).save(path)
    assert Image.open(path).mode.startswith("I")
    im = np.asarray(load_image(path))
    # PIL's own convert would clip everything above 255 to white; we scale.
    assert np.abs(im[..., 0].astype(int) - g8).max() <= 1


def test_cmyk_jpeg_converts_to_rgb(tmp_path, astro):
    path = tmp_path / "print.jpg"
    astro.convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    im = load_image(path)
    assert im.mode == "RGB"
    assert _mad(im, astro) < 6.0


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    im = Image.open(path)
    im.seek(1)  # even when handed an image parked on a later frame
    px = np.asarray(load_image(im))[16, 16]
    assert px[0] > 200 and px[2] < 50


@pytest.mark.parametrize("orientation, stored", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                 (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_applied(tmp_path, astro, orientation, stored):
    # A phone stores the sensor's pixels sideways plus a tag saying how to turn them upright.
    sideways = astro.transpose(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    sideways.save(path, quality=95, exif=exif.tobytes())
    assert _mad(Image.open(path).convert("RGB"), astro) > 20  # really stored sideways
    im = load_image(path)
    assert im.size == astro.size
    assert _mad(im, astro) < 3.0


def _png_header(w: int, h: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_png_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(20000, 20000))
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=r"bomb\.png is 20000x20000 \(400 MP\); the limit is 50 MP"):
        load_image(path)
    assert time.perf_counter() - t0 < 1.0
    # Our limit lifted, PIL's own decompression-bomb guard still answers with our error type.
    with pytest.raises(ImageError, match="bomb.png"):
        load_image(path, max_pixels=None)
    with pytest.raises(ImageError, match="limit is 0.01 MP"):
        load_image(DATA / "astronaut.jpg", max_pixels=10_000)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(ImageError, match=r"dot\.png is 1x1 pixels, too small"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    data = (DATA / "obama.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg is truncated"):
        load_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError, match=r"notes\.jpg is not an image file"):
        load_image(path)
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"GIF? no")


def test_missing_file_and_bad_arrays(tmp_path):
    with pytest.raises(ImageError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="array shape"):
        load_image(np.zeros((4, 4, 4, 4), np.uint8))
    assert issubclass(ImageError, FaceAppError)


def test_atomic_path_writes_a_file_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "a.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json"  # same folder: the rename stays atomic
        tmp.write_text("one")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary file left


def test_atomic_path_replaces_a_folder_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("half")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (out / "old.txt").read_text() == "old"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]
