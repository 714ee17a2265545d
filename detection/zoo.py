"""mmdet's model zoo: find a config's published weights in its metafile, download them safely."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml
from tqdm import tqdm

from .jobs.atomic import TEMP_SUFFIX, atomic_path
from .jobs.locks import FileLock

# OpenMMLab names checkpoints <stem>_<date>-<first 8+ hex digits of the file's sha256>.pth
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")
MAX_CHECKPOINT_BYTES = 4 * 2**30  # mmdet's largest are under 1 GiB


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched or verified; the message says what to do instead."""


@dataclass(frozen=True)
class ZooEntry:
    weights_url: str | None
    box_ap: float | None
    mask_ap: float | None


def file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=None)
def _metafile_models(metafile: Path) -> tuple[dict, ...]:
    with open(metafile) as f:
        return tuple(yaml.safe_load(f).get("Models", []))


def find_metafile_entry(config: Path, configs_dir: Path) -> ZooEntry | None:
    """The metafile entry whose ``Config`` is this config file, or None if mmdet lists none."""
    try:
        relative = config.resolve().relative_to(configs_dir.resolve())
    except ValueError:
        return None
    metafile = configs_dir / relative.parts[0] / "metafile.yml"
    if not metafile.is_file():
        return None
    for model in _metafile_models(metafile):
        if model.get("Config") == f"configs/{relative.as_posix()}":
            metrics = {}
            for result in model.get("Results", []):
                metrics.update(result.get("Metrics", {}))
            return ZooEntry(model.get("Weights"), metrics.get("box AP"), metrics.get("mask AP"))
    return None


@dataclass(frozen=True)
class Downloaded:
    path: Path
    bytes: int
    sha256: str


Progress = Callable[[int, "int | None"], None]  # (bytes so far, bytes in all if known)


def install(url: str, destination: Path, timeout: float = 30.0,
            progress: Progress | None = None) -> Downloaded | None:
    """Download ``url`` to ``destination`` unless it is there (then None). One download of a
    file at a time, across processes (a lock beside it: the command line and download jobs);
    what a download killed half way left is discarded first."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(destination.with_name(f".{destination.name}.lock"))
    lock.acquire(blocking=True)
    try:
        if destination.is_file():
            return None
        _discard_partial(destination)
        return download(url, destination, timeout, progress)
    finally:
        lock.release()


def discard_partial(destination: Path) -> None:
    """Delete what a download of ``destination`` killed half way left, unless one runs now."""
    lock = FileLock(destination.with_name(f".{destination.name}.lock"))
    if lock.acquire(attempts=1):
        try:
            _discard_partial(destination)
        finally:
            lock.release()


def _discard_partial(destination: Path) -> None:
    for partial in destination.parent.glob(f".{destination.name}.*{TEMP_SUFFIX}"):
        partial.unlink(missing_ok=True)


class _WebRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp://)."""

    def redirect_request(self, request, fp, code, message, headers, new_url):
        if urllib.parse.urlsplit(new_url).scheme not in ("http", "https"):
            raise DownloadError(f"{request.full_url} redirects to {new_url!r}: only http(s) "
                                "is followed")
        return super().redirect_request(request, fp, code, message, headers, new_url)


def download(url: str, destination: Path, timeout: float = 30.0, progress: Progress | None = None,
             max_bytes: int = MAX_CHECKPOINT_BYTES) -> Downloaded:
    """Fetch ``url`` into ``destination``, check its length and hash, write atomically. Progress
    goes to ``progress``, or to a progress bar on the terminal."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    done = 0
    opener = urllib.request.build_opener(_WebRedirectsOnly)
    try:
        with opener.open(url, timeout=timeout) as response, \
                atomic_path(destination) as partial, open(partial, "wb") as out, \
                _bar(destination.name, _length(response), progress) as report:
            total = _length(response)
            if total is not None and total > max_bytes:
                raise DownloadError(f"{url} is {total} bytes, more than a checkpoint's "
                                    f"{max_bytes}")
            while chunk := response.read(1 << 16):
                done += len(chunk)
                if done > max_bytes:
                    raise DownloadError(f"{url} sent more than a checkpoint's {max_bytes} bytes")
                out.write(chunk)
                digest.update(chunk)
                report(done, total)
            if total is not None and done != total:  # the connection closed early
                raise DownloadError(f"{url} arrived truncated: {done} of {total} bytes; "
                                    "try again")
            expected = HASH_IN_NAME.search(file_name(url))
            if expected and not digest.hexdigest().startswith(expected.group(1)):
                raise DownloadError(f"{url} arrived corrupted: its sha256 "
                                    f"{digest.hexdigest()[:16]}... does not start with "
                                    f"{expected.group(1)}; try again")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise DownloadError(
            f"could not download {url}: {getattr(error, 'reason', None) or error!r}.\n"
            f"Fetch it on a machine with network access and put it at {destination}") from None
    return Downloaded(destination, done, digest.hexdigest())


def _length(response) -> int | None:
    """The body's announced length; None when absent or not a length."""
    try:
        length = int(response.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    return length if length > 0 else None


@contextlib.contextmanager
def _bar(name: str, total: int | None, progress: Progress | None) -> Iterator[Progress]:
    """``progress`` itself, or a tqdm bar's update."""
    if progress is not None:
        yield progress
        return
    with tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
        yield lambda done, _: bar.update(done - bar.n)
