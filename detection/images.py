"""Uploaded images: decode with Pillow (never trusting names or types), validate, orient, store.

Decoding costs no more than the pixel limit allows, whatever the file claims: Pillow's own bomb
checks are on (``limit_decoding``), and what they cannot see is checked on the raw bytes first
(``image_checks``)."""
from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .image_checks import (
    ORIENTATION,
    BadImage,
    ImageTooLarge,
    check_container,
    exif_orientation,
)

try:  # fast PNG codecs; no wheels for some platforms (e.g. Linux on ARM): Pillow's zlib there
    import fpng  # writes PNGs ~17x faster than zlib level 1, files ~15% larger (docs/codecs.md)
    import pyspng  # libspng: reads them ~1.5x faster than Pillow
except ImportError:
    fpng = pyspng = None
try:  # libjpeg-turbo, as in Pillow, straight into RGB: the same pixels, 1.3x faster, a copy less
    import simplejpeg
except ImportError:
    simplejpeg = None

# Raster formats only: Pillow would hand EPS/PDF to Ghostscript, which untrusted input must not
# reach. Not accepted, because decoding them costs more than their pixels and photos rarely come
# so: JPEG2000 (OpenJPEG allocates for every tile and resolution level the header declares), PSD
# (layer records walked in Python, layer boxes unbounded), AVIF (an AV1 payload may carry any
# number of hidden frames, each decoded), QOI (Pillow decodes it in Python, ~1 µs a pixel).
Image.init()
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM",
                                     "TGA", "ICO", "PCX", "SGI") if f in Image.OPEN)
# Pillow decoders that loop over pixels in Python (RLE BMP; ASCII PPM, PPM of odd depth):
# 0.1 to 2 µs a pixel, a hundred times libjpeg.
SLOW_DECODERS = {"bmp_rle", "ppm", "ppm_plain"}

# Pillow warns from MAX_IMAGE_PIXELS and raises from twice that; we refuse from the limit. Set
# once for the process: warnings.catch_warnings per call would not be thread-safe.
warnings.simplefilter("error", Image.DecompressionBombWarning)
# PNG text and ICC chunks are inflated whole while opening (Pillow: 1 MiB each, 64 MiB in all).
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024

# EXIF orientation -> how to turn the stored pixels (rows, columns, channels) upright
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}
XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError, struct.error,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)


def limit_decoding(max_pixels: int) -> None:
    """Make every Pillow decoder refuse more than ``max_pixels``; call once at start-up.

    Process-wide (decoders check it before they allocate, even inside containers such as ICO),
    so it takes the service's limit; where a call passes another, the smaller applies."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # again: a test may reset it


def check_image(data: bytes, max_pixels: int) -> None:
    """Whether an upload would decode, as far as its container and header tell (no pixel is
    read): ``BadImage`` or ``ImageTooLarge`` if not."""
    _opened(data, max_pixels).close()


def _opened(data: bytes, max_pixels: int) -> Image.Image:
    """An upload opened by Pillow (its header read), its container checked and its size
    within ``max_pixels``; else ``BadImage``."""
    if not data:
        raise BadImage("the file is empty")
    check_container(data, max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise BadImage("the file is not an image in a format this service reads "
                       f"({', '.join(ACCEPTED_FORMATS)})") from None
    except _PILLOW_ERRORS as error:
        raise _refusal(error, "the image header is corrupt") from None
    width, height = image.size
    if width * height > max_pixels or width == 0 or height == 0:
        image.close()
        if width * height > max_pixels:
            raise ImageTooLarge(f"the image is {width}x{height} = {width * height} pixels; "
                                f"the limit is {max_pixels}")
        raise BadImage("the image has no pixels")
    return image


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload into upright 8-bit RGB pixels (height x width x 3), or raise
    ``BadImage``."""
    image = _opened(data, max_pixels)
    try:  # closed on every way out: a refused image's pixels are not kept by its traceback
        if slow := SLOW_DECODERS.intersection(tile[0] for tile in image.tile):
            raise BadImage(f"this kind of {image.format} ({', '.join(slow)}) is not accepted; "
                           "send a PNG or JPEG")
        pixels = _decode_jpeg(data) if image.format == "JPEG" and image.mode in ("RGB", "L") \
            else None
        if pixels is None:
            image.load()
            pixels = np.asarray(_to_rgb(image))
        upright = UPRIGHT.get(_orientation(image))
        return np.ascontiguousarray(upright(pixels)) if upright else pixels
    except _PILLOW_ERRORS as error:
        raise _refusal(error, "the image is truncated or corrupt") from None
    finally:
        image.close()


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """A JPEG's RGB pixels by simplejpeg; None where it is missing or refuses the file (it
    stops at libjpeg's warnings, which Pillow lets pass: Pillow decodes those)."""
    if simplejpeg is None:
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None


def _refusal(error: Exception, what: str) -> BadImage:
    error.__traceback__ = None  # its frames may hold what the decoder had allocated
    if isinstance(error, BadImage):
        return error
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageTooLarge(f"the image is over the pixel limit: {error}")
    if "MAX_TEXT" in str(error):  # PngImagePlugin's limits on text and ICC chunks
        return ImageTooLarge(f"the image's metadata is over the limit: {error}")
    return BadImage(f"{what}: {error}")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8) still to apply to the loaded ``image``."""
    if hasattr(image, "tag_v2"):  # TIFF: Pillow's loader applies tag 274 itself, then drops it
        value = image.tag_v2.get(ORIENTATION, 1)
        return value if isinstance(value, int) else 1
    exif = image.info.get("exif")
    if isinstance(exif, bytes) and (orientation := exif_orientation(exif)):
        return orientation
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    match = XMP_ORIENTATION.search(xmp.encode() if isinstance(xmp, str) else xmp)
    return int(match[1]) if match else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):
        # Deep grayscale: Pillow's convert() would clip, not scale, values above 255. In place,
        # in integers: a float copy of a 40 MP image would take a gigabyte.
        values = np.asarray(image)
        image = Image.fromarray((values // 257).astype(np.uint8))  # mode L
    elif image.mode in ("I", "F"):
        values = np.asarray(image)
        if values.max(initial=0) > 255:
            values = values // 257
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # asarray copies anyway


Z_RLE = 3  # zlib's run-length strategy


def encode_png(pixels: np.ndarray) -> bytes:
    """RGB ``pixels`` (height x width x 3) as PNG bytes: with fpng (1280x960: 4 ms, against 66 ms
    for zlib level 1 with the RLE strategy, itself a third faster than level 1 alone), else with
    Pillow."""
    if fpng is not None:
        return fpng.from_ndarray(np.ascontiguousarray(pixels))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1, compress_type=Z_RLE)
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """The width and height of a PNG this service stored (from its header)."""
    return struct.unpack(">II", png[16:24])


def read_png(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG this service stored (``encode_png``; anything else: read by
    Pillow)."""
    if pyspng is not None:
        try:
            pixels = pyspng.load(path.read_bytes())
        except RuntimeError:  # not a PNG libspng reads: Pillow says what is wrong with it
            pixels = None
        if pixels is not None and pixels.shape[2:] == (3,) and pixels.dtype == np.uint8:
            return pixels
    with Image.open(path) as stored:
        return np.asarray(stored.convert("RGB"))
