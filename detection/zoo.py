"""mmdet's model zoo: find a config's published weights in its metafile, download them safely."""
from __future__ import annotations

import functools
import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

# OpenMMLab names checkpoints <stem>_<date>-<first 8+ hex digits of the file's sha256>.pth
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")


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


def download(url: str, destination: Path, timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``destination`` with a progress bar, check its hash, write atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url}: {getattr(error, 'reason', error)}.\n"
            f"Fetch it on a machine with network access and put it at {destination}") from None
    expected = HASH_IN_NAME.search(file_name(url))
    if expected and not digest.hexdigest().startswith(expected.group(1)):
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url} arrived corrupted: its sha256 {digest.hexdigest()[:16]}... "
                            f"does not start with {expected.group(1)}; try again")
    os.replace(partial, destination)
    return destination
