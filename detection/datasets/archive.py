"""A zip from a client, read with bounds before anything reads what it holds: a dataset (a COCO
annotation file and its images, as ``dataset export`` lays them out) unpacked into a folder, or
a batch's images read into memory. Bounded: the bytes each entry really inflates to (not what
its header claims), the number of entries, and names that stay in the folder.

Nothing is extracted by ``zipfile.extractall``: each entry's name is checked (no absolute path,
no ``..``, no backslash, no control character, no link) and written under the folder only.
"""
from __future__ import annotations

import errno
import io
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

CHUNK = 1 << 20
ENTRY_RECORD_BYTES = 1024  # a central directory entry: 46 bytes, its name, extra and comment
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # bzip2 and LZMA inflate a read unbounded
MAX_DEPTH, MAX_NAME_BYTES = 8, 255  # folders an entry is in; bytes of a name's part
MAX_ANNOTATION_BYTES = 32 << 20  # the COCO file: parsed whole, into many small objects
IGNORED = ("__MACOSX/",)  # what macOS's Archive Utility adds


class BadArchive(ValueError):
    """Not a zip this service unpacks; the message says why."""


class ArchiveTooLarge(ValueError):
    """A zip, or what it inflates to, over a limit."""


@dataclass(frozen=True)
class ArchiveLimits:
    bytes: int  # the zip, and everything in it once inflated
    entries: int  # files in it

    @classmethod
    def of(cls, settings) -> ArchiveLimits:
        """A dataset's images at most, and its annotation file, in ``max_import_mb``."""
        return cls(settings.max_import_mb * 2**20, settings.max_dataset_images + 1)


def unpack_dataset_zip(archive: IO[bytes], folder: Path, limits: ArchiveLimits) -> Path:
    """Unpack ``archive`` into ``folder`` (empty) and return its one COCO annotation file (the
    only ``.json`` in it); ``BadArchive`` or ``ArchiveTooLarge`` otherwise."""
    try:
        _check_directory(archive, limits)
        with zipfile.ZipFile(archive) as opened:
            entries, names = _entries(opened, limits)
            if len(set(map(str.lower, names))) != len(names):
                raise BadArchive("the zip names a file twice")
            annotation_files = [name for name in names if name.lower().endswith(".json")]
            if len(annotation_files) != 1:
                raise BadArchive("the zip needs exactly one COCO annotation file (.json) beside "
                                 f"its images; it has {len(annotation_files)}")
            budget = limits.bytes
            for entry, name in zip(entries, names):
                if entry.file_size > budget:  # as its header says: refused before inflating
                    raise ArchiveTooLarge(_over(limits))
                if name in annotation_files and entry.file_size > MAX_ANNOTATION_BYTES:
                    raise ArchiveTooLarge(f"{name} is over {MAX_ANNOTATION_BYTES} bytes, the "
                                          "limit of an annotation file")
                budget -= _inflate(opened, entry, folder / name, budget, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as error:
        raise BadArchive(f"the body is not a readable zip ({type(error).__name__}: "
                         f"{error})") from None
    except (RuntimeError, NotImplementedError) as error:  # encrypted; a method zipfile lacks
        raise BadArchive(f"the zip cannot be unpacked: {error}") from None
    return folder / annotation_files[0]


def read_zip_files(data: bytes, limits: ArchiveLimits) -> list[tuple[str, bytes]]:
    """The files of zip ``data`` (folders and macOS's extras left out), names checked as an
    unpacked zip's are, in the zip's order; ``BadArchive`` or ``ArchiveTooLarge`` otherwise."""
    archive = io.BytesIO(data)
    try:
        _check_directory(archive, limits)
        with zipfile.ZipFile(archive) as opened:
            entries, names = _entries(opened, limits)
            files, budget = [], limits.bytes
            for entry, name in zip(entries, names):
                if entry.file_size > budget:
                    raise ArchiveTooLarge(_over(limits))
                sink = io.BytesIO()
                budget -= _copy(opened, entry, sink, budget, limits)
                files.append((name, sink.getvalue()))
            return files
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as error:
        raise BadArchive(f"the body is not a readable zip ({type(error).__name__}: "
                         f"{error})") from None
    except (RuntimeError, NotImplementedError) as error:
        raise BadArchive(f"the zip cannot be read: {error}") from None


def _entries(opened: zipfile.ZipFile, limits: ArchiveLimits
             ) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """The zip's files (folders and macOS's extras left out) and their checked names: at most
    ``limits.entries``, stored or deflated."""
    entries = [entry for entry in opened.infolist()
               if not entry.is_dir() and not entry.filename.startswith(IGNORED)]
    if len(entries) > limits.entries:
        raise ArchiveTooLarge(f"the zip has {len(entries)} files; at most {limits.entries} "
                              "are taken")
    names = [_safe_name(entry) for entry in entries]
    if method := next((e.compress_type for e in entries if e.compress_type not in METHODS),
                      None):
        raise BadArchive(f"the zip uses compression method {method}; send it stored or "
                         "deflated (what every zip tool writes by default)")
    return entries, names


def _check_directory(archive: IO[bytes], limits: ArchiveLimits) -> None:
    """Before ``zipfile`` reads the central directory into an object per entry: no larger than
    ``limits.entries`` entries need (a small zip can list millions of empty files). Its size is
    what ``zipfile`` reads by, whatever its entry count claims."""
    end = zipfile._EndRecData(archive)  # the end record, found as ZipFile finds it
    if end is None:
        raise BadArchive("the body is not a readable zip (no end of central directory)")
    if end[zipfile._ECD_SIZE] > limits.entries * ENTRY_RECORD_BYTES:
        raise ArchiveTooLarge(f"the zip lists more files than the {limits.entries} taken here")
    archive.seek(0)


def _safe_name(entry: zipfile.ZipInfo) -> str:
    """The entry's name, checked to stay under the folder it is unpacked into."""
    name = entry.filename
    path = PurePosixPath(name)
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise BadArchive(f"zip entry {name!r:.120} is a symbolic link; links are not unpacked")
    if not name or "\\" in name or not name.isprintable() or path.is_absolute() \
            or ":" in path.parts[0] or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadArchive(f"zip entry {name!r:.120} is not a plain relative path (no absolute "
                         "path, drive, .., backslash or control character)")
    if len(path.parts) > MAX_DEPTH + 1 or any(len(part.encode()) > MAX_NAME_BYTES
                                              for part in path.parts):
        raise BadArchive(f"zip entry {name!r:.120} is more than {MAX_DEPTH} folders deep, or "
                         f"a part of its name is over {MAX_NAME_BYTES} bytes")
    return name


def _inflate(opened: zipfile.ZipFile, entry: zipfile.ZipInfo, target: Path, budget: int,
             limits: ArchiveLimits) -> int:
    """Write ``entry`` to ``target``, counting the bytes it really inflates to; how many."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sink = open(target, "xb")
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise BadArchive(f"zip entry {entry.filename!r:.120} is both a file and a folder") \
            from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise BadArchive(f"zip entry {entry.filename!r:.120}: its name is too long") \
                from None
        raise
    with sink:
        return _copy(opened, entry, sink, budget, limits)


def _copy(opened: zipfile.ZipFile, entry: zipfile.ZipInfo, sink: IO[bytes], budget: int,
          limits: ArchiveLimits) -> int:
    """Inflate ``entry`` into ``sink``, counting the bytes as they come; how many."""
    written = 0
    with opened.open(entry) as source:
        while chunk := source.read(min(CHUNK, budget - written + 1)):
            written += len(chunk)
            if written > budget:  # its header lied: refused as soon as the bytes pass it
                raise ArchiveTooLarge(_over(limits))
            sink.write(chunk)
    return written


def _over(limits: ArchiveLimits) -> str:
    return f"the zip's files inflate to more than {limits.bytes} bytes, the limit here"
