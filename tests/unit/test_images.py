"""Decoding uploads: every format Pillow reads, orientation, and every way an upload can be bad."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from detection.images import BadImage, ImageTooLarge, decode_image, encode_png
from detection.jobs.atomic import write_atomically
from tests.bombs import bomb_png
from tests.support import png_bytes

LIMIT = 4_000_000


def decode(data: bytes, max_pixels: int = LIMIT) -> Image.Image:
    pixels = decode_image(data, max_pixels)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    return Image.fromarray(pixels)


@pytest.mark.parametrize("format,mode,save", [
    ("JPEG", "RGB", {}), ("JPEG", "CMYK", {}), ("JPEG", "L", {}), ("PNG", "RGB", {}),
    ("PNG", "P", {}), ("WEBP", "RGB", {}), ("GIF", "P", {}), ("BMP", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "CMYK", {}), ("PPM", "RGB", {}),
])
def test_every_common_format_becomes_rgb_with_the_same_content(format, mode, save):
    image = decode(png_bytes(format=format, mode=mode, **save))
    assert image.mode == "RGB" and image.size == (320, 240)
    reference = Image.open(io.BytesIO(png_bytes())).convert(mode).convert("RGB")
    # The rectangle and the background survive every codec (lossy ones roughly).
    for xy in [(100, 120), (10, 10)]:
        assert np.abs(np.subtract(image.getpixel(xy), reference.getpixel(xy))).max() < 40


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped():
    values = np.full((50, 60), 32768, dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    image = decode(buffer.getvalue())
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (127, 127, 127)


def test_transparency_is_laid_on_white():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    image = decode(buffer.getvalue())
    assert image.getpixel((5, 5)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 255)


def test_exif_orientation_is_applied():
    upright = Image.open(io.BytesIO(png_bytes(size=(300, 200)))).convert("RGB")
    # Stored rotated, with orientation 6 ("rotate 90 CW to view") in the EXIF.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    image = decode(buffer.getvalue())
    assert image.size == (300, 200)
    assert np.abs(np.subtract(image.getpixel((80, 100)), upright.getpixel((80, 100)))).max() < 40


def test_text_is_not_an_image():
    with pytest.raises(BadImage, match="not an image"):
        decode(b"hello, this is a text file\n" * 10)


def test_postscript_is_refused_before_ghostscript_sees_it():
    with pytest.raises(BadImage, match="not an image"):
        decode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")


def test_truncated_image():
    data = png_bytes(size=(640, 480), format="JPEG")
    with pytest.raises(BadImage, match="truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_corrupt_header():
    data = bytearray(png_bytes())
    data[20:30] = b"\xff" * 10  # the IHDR chunk, CRC no longer matches
    with pytest.raises(BadImage):
        decode(bytes(data))


def test_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode(bomb_png(100_000, 100_000))


def test_pixel_limit_is_a_setting():
    assert decode(png_bytes(size=(100, 100)), max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLarge):
        decode(png_bytes(size=(101, 100)), max_pixels=10_000)


def test_a_stored_png_is_written_atomically_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a.png"
    write_atomically(target, encode_png(np.zeros((10, 10, 3), np.uint8)))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    assert Image.open(target).size == (10, 10)


@pytest.mark.parametrize("fast", [True, False], ids=["fpng+libspng", "pillow"])
@pytest.mark.parametrize("size", [(1, 1), (3, 7), (640, 480), (1921, 1081)])
def test_stored_pngs_hold_exactly_the_pixels(tmp_path, monkeypatch, fast, size):
    """Whichever codec writes and reads them, <sid>.png and <sid>.out.png are PNG files whose
    pixels, decoded by a reference decoder (Pillow's), are the image's."""
    from detection import images
    if not fast:
        monkeypatch.setattr(images, "fpng", None)
        monkeypatch.setattr(images, "pyspng", None)
    elif images.fpng is None:
        pytest.skip("fpng and pyspng have no wheel for this platform")
    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2] //= 16  # some flat runs, some noise
    target = tmp_path / "a.png"
    write_atomically(target, images.encode_png(pixels))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as reference:
        assert reference.format == "PNG" and reference.mode == "RGB"
        assert np.array_equal(np.asarray(reference), pixels)
    assert np.array_equal(images.read_png(target), pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_every_exif_orientation_turns_the_image_as_pillow_does(orientation, format):
    stored = Image.fromarray(np.random.default_rng(orientation).integers(
        0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format=format, exif=exif.tobytes())
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB")
    assert np.array_equal(decode_image(buffer.getvalue(), LIMIT), np.asarray(reference))


def jpeg_variants() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    photo = Image.open(io.BytesIO(png_bytes(size=(333, 251)))).convert("RGB")
    noise = rng.integers(-20, 20, (251, 333, 3))
    noisy = Image.fromarray(np.clip(np.asarray(photo) + noise, 0, 255).astype(np.uint8))
    variants = {"baseline 4:2:0": {}, "4:4:4": {"subsampling": 0},
                "progressive": {"progressive": True}, "gray": {"mode": "L"},
                "restart markers": {"restart_marker_blocks": 2}, "quality 30": {"quality": 30}}
    jpegs = {}
    for name, options in variants.items():
        options = dict(options)
        image = noisy.convert(options.pop("mode", "RGB"))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", **{"quality": 90, **options})
        jpegs[name] = buffer.getvalue()
    # Stray bytes before the end marker: libjpeg warns, simplejpeg refuses, Pillow decodes.
    end = jpegs["baseline 4:2:0"].rindex(b"\xff\xd9")
    jpegs["libjpeg warning"] = jpegs["baseline 4:2:0"][:end] + b"junk" * 10 + b"\xff\xd9"
    return jpegs


@pytest.mark.parametrize("name,data", jpeg_variants().items(), ids=jpeg_variants().keys())
def test_jpegs_decode_to_pillows_pixels_with_or_without_simplejpeg(name, data, monkeypatch):
    from detection import images
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_image(data, LIMIT), reference)
    if images.simplejpeg is not None:  # it decoded all but the one it refuses
        assert (images._decode_jpeg(data) is None) == (name == "libjpeg warning")
    monkeypatch.setattr(images, "simplejpeg", None)
    assert np.array_equal(decode_image(data, LIMIT), reference)
