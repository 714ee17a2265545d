"""An image file's raw bytes, checked before Pillow parses them: what would cost Pillow more than
the pixels it yields (TIFF tiles and tag tables, JPEG scans and segments, EXIF and MPF tables, GIF
extensions, icon frames, PNG chunks, PPM headers) is refused, with caps, here."""
from __future__ import annotations

import re
import struct
from typing import NamedTuple

from PIL import TiffImagePlugin


class BadImage(ValueError):
    """The upload is not an image this service can read; the message says why."""


class ImageTooLarge(BadImage):
    """The image, or what decoding it would expand, is over the service's limits."""


# Every scan makes libjpeg walk all the picture's coefficients again. Progressive JPEGs have 10
# scans (libjpeg, so Pillow, jpegtran, ImageMagick; 6 gray, 18 CMYK), mozjpeg 4 to 17.
MAX_JPEG_SCANS = 32
MAX_JPEG_SEGMENTS = 1024  # real files have tens; Pillow keeps each one it reads
MAX_JPEG_TABLES = 64 * 1024  # quantization tables, re-sliced by Pillow per table; 4 are 516 B
MAX_HEADER_JUNK = 64 * 1024  # stray bytes Pillow steps through one at a time, in Python
MAX_EXIF_BYTES = 64 * 1024  # what a JPEG segment holds; the orientation is in its first entries
MAX_IFD_NUMBERS = 64 * 1024  # bytes of a TIFF's EXIF/GPS/interop IFD Pillow makes numbers of
MAX_GIF_BLOCKS = 16 * 1024  # extension sub-blocks before the first image, read in Python
MAX_GIF_COMMENT = 64 * 1024  # Pillow joins comment sub-blocks by repeated concatenation
MAX_PNG_CHUNKS = 64 * 1024  # read one by one in Python, ~3 µs each; real files have tens
MAX_ICON_SIDE = 256  # all an icon directory can describe; Pillow decodes one while opening
# TIFF codecs whose cost is that of the tile or strip; JPEG-in-TIFF would hide its scans.
TIFF_COMPRESSIONS = {1: "none", 5: "LZW", 8: "Deflate", 32946: "Deflate", 32773: "PackBits"}

ORIENTATION = 0x0112
# A JPEG marker: 0xFF then a code; not 0x00 (a stuffed 0xFF), 0xFF (fill) or a restart (which
# belongs to the scan it is in).
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
PPM_HEADER_PART = re.compile(rb"\s+|#[^\r\n]*|[^\s#]+")  # whitespace, a comment, a token
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                   13: 4, 16: 8, 17: 8, 18: 8}
TIFF_BYTES_TYPES = {1, 2, 7}  # Pillow keeps these as bytes; other types become Python numbers
TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q"}

def exif_orientation(exif: bytes) -> int:
    """Tag 0x0112 of IFD0 of a raw EXIF block, read in its first 64 KiB only (0 if absent).

    Not with PIL's Exif: it copies every tag's value, and the values may all overlap."""
    exif = exif[6:MAX_EXIF_BYTES + 6] if exif.startswith(b"Exif\0\0") else exif[:MAX_EXIF_BYTES]
    try:
        order, first = _tiff_header(exif)
    except BadImage:
        return 0
    kind, count, value = _ifd(exif, order, first).entries.get(ORIENTATION, (0, 0, b""))
    return struct.unpack_from(order + "H", value)[0] if (kind, count) == (3, 1) else 0


def check_container(data: bytes, max_pixels: int) -> None:
    """Refuse what would cost Pillow more than the pixels, before Pillow parses anything."""
    if data.startswith(b"\xff\xd8\xff"):
        _check_jpeg(data)
    elif data[:4] in TiffImagePlugin.PREFIXES:
        _check_tiff(data, max_pixels)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        _check_gif(data)
    elif data[:4] == b"\0\0\1\0":
        _check_icon(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        _check_png(data)
    elif data[:1] == b"P" and data[1:2] in (b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"f", b"y"):
        _check_ppm(data)


def _check_jpeg(data: bytes) -> None:
    """Count the scans libjpeg will decode in the first picture and the segments and junk
    Pillow walks, and vet the EXIF and MPF tables Pillow parses while opening it."""
    scans = segments = junk = tables = 0
    position = 2
    while match := JPEG_MARKER.search(data, position):
        if not scans:
            junk += match.start() - position
        marker, position = data[match.start() + 1], match.end()
        if marker == 0xD9:  # end of the picture (an MPO's next ones are not decoded)
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS or junk > MAX_HEADER_JUNK:
            raise BadImage(f"the JPEG has more than {MAX_JPEG_SEGMENTS} segments or "
                           f"{MAX_HEADER_JUNK} stray bytes")
        if marker in (0x01, 0xD8):  # no length
            continue
        length = int.from_bytes(data[position:position + 2], "big")
        segment, position = data[position + 2:position + length], position + max(length, 2)
        if marker == 0xDA:  # start of scan; the next search skips its entropy-coded data
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageTooLarge(f"the JPEG has more than {MAX_JPEG_SCANS} scans "
                                    "(progressive JPEGs have about 10)")
        elif marker == 0xDB:
            tables += len(segment)
            if tables > MAX_JPEG_TABLES:
                raise BadImage(f"the JPEG has more than {MAX_JPEG_TABLES} bytes of tables")
        elif marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            _check_tag_table(segment[6:], "EXIF block")
        elif marker == 0xE2 and segment.startswith(b"MPF\0"):
            _check_tag_table(segment[4:], "multi-picture index")


def _check_tag_table(block: bytes, what: str) -> None:
    if block[:4] in TiffImagePlugin.PREFIXES:  # else Pillow ignores it too
        _check_ifd(block, *_tiff_header(block), what)


def _check_tiff(data: bytes, max_pixels: int) -> None:
    """Vet the tag tables Pillow and libtiff read (IFD0, the next page's, EXIF, GPS, interop),
    the codec, and the tile or strip size, before any of them is parsed."""
    order, first = _tiff_header(data)
    tags = _check_ifd(data, order, first, "TIFF tag table", unique=True)
    if next_ifd := _ifd(data, order, first).next:  # read to tell whether there are more pages
        _check_ifd(data, order, next_ifd, "TIFF tag table")
    exif = _check_sub_ifd(data, order, tags.get(34665), "EXIF")
    _check_sub_ifd(data, order, tags.get(34853), "GPS")
    _check_sub_ifd(data, order, exif.get(40965), "interop")

    def number(tag: int) -> int:
        return _number(data, order, tags.get(tag)) or 0

    compression = number(259) or 1
    if compression not in TIFF_COMPRESSIONS:
        raise BadImage(f"TIFF compression {compression} is not accepted; "
                       f"accepted: {', '.join(sorted(set(TIFF_COMPRESSIONS.values())))}")
    if 322 in tags or 323 in tags:
        block = (number(322), number(323))
    else:  # libtiff reads at most the image's height in one strip
        block = (number(256), min(number(278) or number(257), number(257)))
    if abs(block[0] * block[1]) > max_pixels:
        raise ImageTooLarge(f"the TIFF is stored in blocks of {block[0]}x{block[1]} pixels, "
                            f"each decoded whole; the limit is {max_pixels}")


def _tiff_header(block: bytes) -> tuple[str, int]:
    """The byte order and first IFD's offset of a TIFF structure, as Pillow reads them."""
    if block[:4] not in TiffImagePlugin.PREFIXES or len(block) < 8:
        raise BadImage("the TIFF header is corrupt")
    if block[2] == 43:
        raise BadImage("BigTIFF is not accepted")
    order = "<" if block[:2] == b"II" else ">"
    return order, struct.unpack_from(order + "I", block, 4)[0]


class _Ifd(NamedTuple):
    entries: dict[int, tuple[int, int, bytes]]  # tag: type, count, 4-byte value field
    next: int  # the next IFD's offset
    outside: int  # bytes its values take outside the table
    numbers: int  # of those, bytes Pillow makes Python numbers of
    repeated: int  # entries whose tag came before


def _ifd(block: bytes, order: str, offset: int) -> _Ifd:
    """The IFD at ``offset`` of a TIFF structure, as far as ``block`` holds it."""
    if offset + 2 > len(block):
        return _Ifd({}, 0, 0, 0, 0)
    count = min(struct.unpack_from(order + "H", block, offset)[0],
                (len(block) - offset - 2) // 12)
    entries: dict[int, tuple[int, int, bytes]] = {}
    outside = numbers = repeated = 0
    for start in range(offset + 2, offset + 2 + 12 * count, 12):
        tag, kind, items, value = struct.unpack_from(order + "HHI4s", block, start)
        size = items * TIFF_TYPE_SIZES.get(kind, 0)
        if size > 4:
            outside += size
            numbers += 0 if kind in TIFF_BYTES_TYPES else size
        repeated += tag in entries
        entries.setdefault(tag, (kind, items, value))
    end = offset + 2 + 12 * count
    next_ifd = struct.unpack_from(order + "I", block, end)[0] if end + 4 <= len(block) else 0
    return _Ifd(entries, next_ifd, outside, numbers, repeated)


def _check_ifd(block: bytes, order: str, offset: int, what: str, whole: bool = False,
               unique: bool = False) -> dict[int, tuple[int, int, bytes]]:
    """The IFD's entries, unless its values claim more bytes than the file has (they overlap:
    a reader that copies each would hold many files' worth); or, for an IFD Pillow reads
    ``whole`` into Python numbers, more than MAX_IFD_NUMBERS bytes of them; or, where the
    entries must be ``unique``, a tag twice (Pillow would take the last, libtiff the first)."""
    ifd = _ifd(block, order, offset)
    if ifd.outside > len(block) or (whole and ifd.numbers > MAX_IFD_NUMBERS):
        raise BadImage(f"the {what} is malformed: its values claim {ifd.outside} bytes "
                       f"({ifd.numbers} of numbers) in {len(block)}")
    if unique and ifd.repeated:
        raise BadImage(f"the {what} is malformed: {ifd.repeated} tags appear twice")
    return ifd.entries


def _check_sub_ifd(block: bytes, order: str, pointer: tuple[int, int, bytes] | None,
                   name: str) -> dict[int, tuple[int, int, bytes]]:
    offset = _number(block, order, pointer)
    return {} if offset is None else _check_ifd(block, order, offset, f"TIFF {name} IFD",
                                                whole=True, unique=True)


def _number(block: bytes, order: str, entry: tuple[int, int, bytes] | None) -> int | None:
    """The first value of an entry that Pillow reads as one number, whatever its count."""
    if entry is None or entry[1] == 0:
        return None  # Pillow skips an empty entry
    kind, count, value = entry
    if kind not in TIFF_INTEGERS:
        raise BadImage(f"the TIFF is malformed: a tag that holds a number has type {kind}")
    code = order + TIFF_INTEGERS[kind]
    if count * TIFF_TYPE_SIZES[kind] <= 4:
        return struct.unpack_from(code, value)[0]
    offset = struct.unpack_from(order + "I", value)[0]
    if offset + count * TIFF_TYPE_SIZES[kind] > len(block):
        return None  # Pillow skips a truncated entry
    return struct.unpack_from(code, block, offset)[0]


def _check_gif(data: bytes) -> None:
    """Count what Pillow reads in Python before the first frame: extension sub-blocks (and
    stray bytes), and comment bytes, which it joins by repeated concatenation."""
    flags = data[10] if len(data) > 10 else 0
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = comment = 0
    label = None  # the label of the extension being read
    while position < len(data):
        blocks += 1
        if blocks > MAX_GIF_BLOCKS or comment > MAX_GIF_COMMENT:
            raise ImageTooLarge(f"the GIF has more than {MAX_GIF_BLOCKS} extension blocks or "
                                f"{MAX_GIF_COMMENT} bytes of comment before its first image")
        byte = data[position]
        if label is not None:  # a sub-block of ``byte`` bytes, or 0: the extension's end
            comment += byte if label == b"\xfe" else 0
            label = label if byte else None
            position += byte + 1
        elif byte == 0x21:
            label, position = data[position + 1:position + 2], position + 2
        elif byte in (0x2C, 0x3B):  # the first image, or the end
            return
        else:  # a stray byte, skipped
            position += 1


def _check_icon(data: bytes) -> None:
    """Every picture in an icon must be at most 256x256 (its embedded PNG or bitmap header)."""
    count = min(int.from_bytes(data[4:6], "little"), (len(data) - 6) // 16)
    for entry in range(6, 6 + 16 * count, 16):
        offset = struct.unpack_from("<I", data, entry + 12)[0]
        header = data[offset:offset + 24]
        if len(header) < 24:
            continue  # Pillow refuses it
        if header.startswith(b"\x89PNG"):
            width, height = struct.unpack_from(">II", header, 16)
        else:  # a bitmap: its header's size, then the size of the colours and the AND mask
            _, width, height = struct.unpack_from("<IHH" if header[0] == 12 else "<Iii", header)
            width, height = abs(width), abs(height) // 2
        if width > MAX_ICON_SIDE or height > MAX_ICON_SIDE:
            raise ImageTooLarge(f"the icon holds a {width}x{height} picture; icons hold at most "
                                f"{MAX_ICON_SIDE}x{MAX_ICON_SIDE}")


def _check_png(data: bytes) -> None:
    position = 8
    for _ in range(MAX_PNG_CHUNKS):
        if position + 8 > len(data) or data[position + 4:position + 8] == b"IEND":
            return
        position += 12 + int.from_bytes(data[position:position + 4], "big")
    raise ImageTooLarge(f"the PNG has more than {MAX_PNG_CHUNKS} chunks")


def _check_ppm(data: bytes) -> None:
    """Pillow reads a PPM header a byte at a time, in Python: it must end within 64 KiB."""
    needed = 3 if data[:2] in (b"P1", b"P4") else 4  # magic, width, height (, maxval or scale)
    position = 0
    while needed and (part := PPM_HEADER_PART.match(data, position, MAX_HEADER_JUNK)):
        needed -= part[0][:1] not in b" \t\n\v\f\r#"
        position = part.end()
    if needed and position >= MAX_HEADER_JUNK:
        raise ImageTooLarge(f"the PPM header is longer than {MAX_HEADER_JUNK} bytes")


