"""Hostile image files built in memory: small uploads that cost a naive decoder far more than
their pixels are worth. Each is what an attacker would send (valid where validity makes it
costlier); tests/hostile/test_hostile_images.py feeds them to decode_image. Sizes are what a 20 MB
upload allows, or what keeps the picture under the tests' 4-megapixel limit."""
from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

MB = 1 << 20
SHORT, LONG, RATIONAL, UNDEFINED = 3, 4, 5, 7
Entry = tuple[int, int, int, bytes]  # tag, type, count, value (4 bytes: inline or an offset)


def small_image(format: str, size: tuple[int, int] = (64, 48), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, format=format, **save)
    return buffer.getvalue()


# --- PNG ------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=None)
def deflate_zeros(count: int) -> bytes:
    """A zlib stream of ``count`` zero bytes, ~1000 times smaller, built without compressing
    them all: fully flushed pieces are independent, so one compressed MiB is repeated."""
    def piece(size: int) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(bytes(size)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(count, MB)
    body = piece(MB) * whole + (piece(rest) if rest else b"")
    adler = ((count % 65521) << 16) | 1  # adler32 of zeros: a stays 1, b counts them
    return b"\x78\xda" + body + b"\x03\x00" + struct.pack(">I", adler)


def bomb_png(width: int, height: int) -> bytes:
    """A few bytes of PNG whose header claims ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))


def black_png(width: int, height: int) -> bytes:
    """A complete 1-bit PNG of ``width`` x ``height`` black pixels (~1000:1 compressed)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = height * (1 + (width + 7) // 8)  # a filter byte, then the packed row
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", deflate_zeros(rows)) + png_chunk(b"IEND", b""))


def with_chunks_before_idat(png: bytes, chunks: bytes) -> bytes:
    first_idat = png.index(b"IDAT") - 4
    return png[:first_idat] + chunks + png[first_idat:]


def png_with_crafted_exif(entries: int = 300, blob: int = 1_000_000) -> bytes:
    """A 64x48 PNG with a 1 MB eXIf chunk (``crafted_exif``, orientation 6): exif_transpose
    reads it twice, copying the blob once per tag, then writes every tag back out."""
    return with_chunks_before_idat(small_image("PNG"),
                                   png_chunk(b"eXIf", crafted_exif(entries, blob)))


def png_with_many_chunks(size: int = 20 * MB) -> bytes:
    """A 64x48 PNG with ``size`` bytes of empty private chunks, read one by one in Python."""
    chunk = png_chunk(b"prIv", b"")
    return with_chunks_before_idat(small_image("PNG"), chunk * (size // len(chunk)))


# --- ICO ------------------------------------------------------------------------------------

def icon(picture: bytes, bits: int = 32) -> bytes:
    """An icon whose directory says one 256x256 picture, ``picture``."""
    return (struct.pack("<HHH", 0, 1, 1)
            + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, bits, len(picture), 22) + picture)


def ico_with_huge_png(side: int = 20_000) -> bytes:
    """An icon whose embedded PNG is ``side`` x ``side`` (20000: a 50 KB file, 400 MB once
    decoded, inside Image.open)."""
    return icon(black_png(side, side))


def rle_bitmap_rows(width: int, height: int) -> bytes:
    """RLE8 pixels: each row one pixel, then end-of-line, which Pillow pads a byte at a time."""
    return b"\x01\x05\x00\x00" * height + b"\x00\x01"


def bitmap_info(width: int, height: int, pixels: bytes) -> bytes:
    """A BITMAPINFOHEADER for 8-bit RLE pixels, and a gray palette."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835,
                         256, 0)
    return header + b"".join(bytes((i, i, i, 0)) for i in range(256))


def bmp_with_rle_rows(width: int = 2000, height: int = 2000) -> bytes:
    """An RLE BMP of ``width`` x ``height`` in ~4 bytes a row, decoded by Pillow in Python
    (6000x6000: a 24 KB file, 4 s)."""
    pixels = rle_bitmap_rows(width, height)
    info = bitmap_info(width, height, pixels)
    return (b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
            + info + pixels)


def ico_with_huge_bitmap(side: int = 2000) -> bytes:
    """An icon whose embedded bitmap is an RLE ``side`` x ``side``, decoded inside Image.open."""
    pixels = rle_bitmap_rows(side, side)
    and_mask = bytes((side + 31) // 32 * 4 * side)
    return icon(bitmap_info(side, 2 * side, pixels) + pixels + and_mask, 8)  # height: both


# --- TIFF structures (TIFF files, EXIF and MPF blocks) ---------------------------------------

def tiff_structure(entries: list[Entry], endian: bytes = b"II") -> bytes:
    """A TIFF header and one IFD at offset 8, its entries' value fields given as they are."""
    order = "<" if endian == b"II" else ">"
    table = struct.pack(f"{order}H", len(entries))
    for tag, kind, count, value in sorted(entries):
        table += struct.pack(f"{order}HHI", tag, kind, count) + value.ljust(4, b"\0")
    return endian + struct.pack(f"{order}HI", 42, 8) + table + bytes(4)


def ifd_size(entries: int) -> int:
    return 8 + 2 + 12 * entries + 4


def short(value: int) -> tuple[int, int, bytes]:
    return SHORT, 1, struct.pack("<H", value)


def long(value: int) -> tuple[int, int, bytes]:
    return LONG, 1, struct.pack("<I", value)


def gray_tiff_entries(width: int, height: int, pixels_at: int, count: int) -> list[Entry]:
    return [(256, *short(width)), (257, *short(height)), (258, *short(8)), (259, *short(1)),
            (262, *short(1)), (273, *long(pixels_at)), (277, *short(1)),
            (278, *short(height)), (279, *long(count))]


def tiff_with_huge_tile(side: int = 64, tile: int = 16_384) -> bytes:
    """A ``side`` x ``side`` RGB TIFF stored as one ``tile`` x ``tile`` deflated tile of zeros
    (16384: an 800 KB file; libtiff decodes the whole 805 MB tile to show 64x64 pixels)."""
    data = deflate_zeros(tile * tile * 3)
    entries = [(256, *short(side)), (257, *short(side)), (258, SHORT, 3, b""),
               (259, *short(8)), (262, *short(2)), (277, *short(3)), (284, *short(1)),
               (322, *short(tile)), (323, *short(tile)), (324, *long(0)),
               (325, *long(len(data)))]
    bits_at = ifd_size(len(entries))  # 8, 8, 8 after the table, then the tile
    entries[2] = (258, SHORT, 3, struct.pack("<I", bits_at))
    entries[9] = (324, *long(bits_at + 6))
    return tiff_structure(entries) + struct.pack("<3H", 8, 8, 8) + data


def tiff_with_overlapping_tags(entries: int = 2_000, blob: int = 600_000) -> bytes:
    """A valid 64x64 gray TIFF whose IFD also has ``entries`` private tags all pointing at the
    same ``blob`` bytes: a reader that copies each tag's value holds entries x blob bytes
    (2000 x 600 KB: a 620 KB file, 1.2 GB per copy)."""
    pixels_at = ifd_size(9 + entries)
    table = gray_tiff_entries(64, 64, pixels_at, 64 * 64)
    table += [(40_000 + i, UNDEFINED, blob, struct.pack("<I", pixels_at))
              for i in range(entries)]
    return tiff_structure(table) + bytes(max(blob, 64 * 64))


def tiff_with_numeric_exif(size: int = 20 * MB) -> bytes:
    """A valid 64x64 gray TIFF whose EXIF IFD holds ``size`` bytes of rationals: loading it,
    Pillow makes Python objects of all of them (20 MB: 2.6 million)."""
    pixels_at = ifd_size(10)
    exif_at = pixels_at + 64 * 64
    rationals_at = exif_at + 2 + 12 + 4
    table = gray_tiff_entries(64, 64, pixels_at, 64 * 64) + [(34665, *long(exif_at))]
    exif = struct.pack("<HHHII", 1, 0xD000, RATIONAL, size // 8, rationals_at) + bytes(4)
    return tiff_structure(table) + bytes(64 * 64) + exif + b"\1\0\0\0\1\0\0\0" * (size // 8)


def crafted_exif(entries: int, blob: int, kind: int = UNDEFINED) -> bytes:
    """A big-endian TIFF structure whose IFD0 says orientation 6, then has ``entries`` private
    tags whose ``blob``-byte values all overlap: a reader that copies or unpacks every tag does
    entries x blob work for entries x 12 + blob bytes."""
    value_at = struct.pack(">I", ifd_size(entries + 1))
    unit = {UNDEFINED: 1, RATIONAL: 8}[kind]
    tags = [(0x0112, SHORT, 1, struct.pack(">H", 6))]
    tags += [(0xD000 + i, kind, blob // unit, value_at) for i in range(entries)]  # unknown
    return tiff_structure(tags, b"MM") + b"\0\0\0\1" * (blob // 4)  # as rationals: 0/1 ...


# --- JPEG -----------------------------------------------------------------------------------

def jpeg_segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def after_soi(segments: bytes, jpeg: bytes | None = None) -> bytes:
    jpeg = jpeg or small_image("JPEG")
    return jpeg[:2] + segments + jpeg[2:]


def jpeg_with_crafted_exif(entries: int = 4_000, blob: int = 16_000) -> bytes:
    """A 64x48 JPEG whose 64 KB Exif segment holds ``entries`` tags of ``blob`` bytes of
    rationals, all overlapping: Pillow's open copies them all (for the DPI), exif_transpose
    makes 8 million Python rationals."""
    return after_soi(jpeg_segment(0xE1, b"Exif\0\0" + crafted_exif(entries, blob, RATIONAL)))


def jpeg_with_crafted_mpf(entries: int = 4_000, blob: int = 16_000) -> bytes:
    """A 64x48 JPEG whose multi-picture index (APP2 "MPF") is ``crafted_exif``: Pillow's open
    turns every tag of it into Python rationals, 8 million from 64 KB."""
    return after_soi(jpeg_segment(0xE2, b"MPF\0" + crafted_exif(entries, blob, RATIONAL)))


def jpeg_with_fill_bytes(size: int = 20 * MB) -> bytes:
    """A 64x48 JPEG whose first marker is preceded by ``size`` 0xFF fill bytes, which Pillow
    steps through one at a time in Python."""
    return after_soi(b"\xff" * size)


def jpeg_with_many_segments(size: int = 20 * MB) -> bytes:
    """A 64x48 JPEG with ``size`` bytes of empty APP5 segments, each read and kept by Pillow."""
    return after_soi(jpeg_segment(0xE5, b"") * (size // 4))


def jpeg_segments(jpeg: bytes) -> list[bytes]:
    """Split a well-formed JPEG into its segments, each scan with its entropy-coded data."""
    segments, position = [], 2
    while position < len(jpeg):
        marker = jpeg[position + 1]
        if marker == 0xD9:
            segments.append(jpeg[position:])
            break
        end = position + 2 + struct.unpack(">H", jpeg[position + 2:position + 4])[0]
        if marker == 0xDA:  # the scan runs to the next marker that is not a restart
            while not (jpeg[end] == 0xFF and jpeg[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
        segments.append(jpeg[position:end])
        position = end
    return segments


def jpeg_with_many_scans(scans: int = 2_000, size: tuple[int, int] = (2000, 2000)) -> bytes:
    """A valid progressive JPEG (as Pillow writes it, 10 scans) whose last scan, the final
    refinement of the luma, is repeated until there are ``scans``: each repeat is ~20 bytes and
    makes libjpeg walk every coefficient of the picture again (2000: 50 KB, 5 s)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(buffer, format="JPEG", progressive=True)
    segments = jpeg_segments(buffer.getvalue())
    last = max(i for i, segment in enumerate(segments) if segment[1] == 0xDA)
    repeats = scans - sum(segment[1] == 0xDA for segment in segments)
    return (b"\xff\xd8" + b"".join(segments[:last + 1]) + segments[last] * repeats
            + b"".join(segments[last + 1:]))


# --- GIF, PPM -------------------------------------------------------------------------------

def gif_with_long_comment(size: int = 20 * MB) -> bytes:
    """A 64x48 GIF whose comment is ``size`` bytes, in 255-byte sub-blocks that Pillow joins
    by repeated concatenation (quadratic: 20 MB, a minute)."""
    gif = small_image("GIF")
    flags = gif[10]
    first_block = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the palette
    sub_block = b"\xff" + b"c" * 255
    comment = b"!\xfe" + sub_block * (size // len(sub_block)) + b"\0"
    return gif[:first_block] + comment + gif[first_block:]


def ppm_with_long_comment(size: int = 20 * MB) -> bytes:
    """A 4x4 PPM whose header has a ``size``-byte comment, read a byte at a time in Python."""
    return b"P6\n#" + b"c" * size + b"\n4 4\n255\n" + bytes(48)


def ppm_with_odd_depth(width: int = 1000, height: int = 1000) -> bytes:
    """A binary PPM with maxval 1000 (6 bytes a pixel), which Pillow decodes in Python."""
    return f"P6\n{width} {height}\n1000\n".encode() + bytes(6 * width * height)


def refused() -> dict[str, bytes]:
    """Every bomb the service must refuse, by generator name (the crafted-EXIF PNG decodes)."""
    names = ("ico_with_huge_png", "ico_with_huge_bitmap", "tiff_with_huge_tile",
             "tiff_with_overlapping_tags", "tiff_with_numeric_exif", "jpeg_with_crafted_exif",
             "jpeg_with_crafted_mpf", "jpeg_with_many_scans", "jpeg_with_fill_bytes",
             "jpeg_with_many_segments", "png_with_many_chunks", "gif_with_long_comment",
             "ppm_with_long_comment", "ppm_with_odd_depth", "bmp_with_rle_rows")
    return {name: globals()[name]() for name in names} | {"bomb_png": bomb_png(60_000, 60_000)}
