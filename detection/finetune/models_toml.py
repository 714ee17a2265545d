"""Writing models.toml: a model's table added or replaced, atomically and one writer at a time
(a lock beside the file), for the command line's ``finetune`` and a taught model's promote. Web
and workers read the file again when it changes; other tables and comments stay as they are."""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

from ..jobs.atomic import atomic_path
from ..jobs.locks import exclusively

TABLE_HEADER = re.compile(r"^\[(?P<name>[^\]\n]+)\][ \t]*(#[^\n]*)?$", re.MULTILINE)


class ModelsFileError(ValueError):
    """models.toml cannot take this change (the message says why); it is left as it was."""


def add_table(models_file: Path, name: str, table: dict) -> None:
    """``[name]`` added; refused if the file has one already."""
    with exclusively(_lock(models_file)):
        current = models_file.read_text()
        if name in _parse(current):
            raise ModelsFileError(f"{models_file} has a model named {name!r} already")
        _write(models_file, current.rstrip("\n") + "\n\n" + _format(name, table))


def replace_table(models_file: Path, name: str, table: dict,
                  may_replace=lambda old: True) -> None:
    """``[name]`` replaced by ``table``, keeping the keys of the old one that ``table`` does not
    set (an operator's ``review`` rule, say); added if absent. ``may_replace(old table)`` is
    asked under the lock, before anything is written."""
    with exclusively(_lock(models_file)):
        current = models_file.read_text()
        old = _parse(current).get(name)
        if old is not None and not may_replace(old):
            raise ModelsFileError(f"model {name!r}'s table in {models_file.name} is not ours "
                                  "to replace")
        block = _format(name, {**(old or {}), **table})
        headers = list(TABLE_HEADER.finditer(current))
        start = next((i for i, h in enumerate(headers) if h["name"].strip() == name), None)
        if start is None:
            text = current.rstrip("\n") + "\n\n" + block
        else:
            end = headers[start + 1].start() if start + 1 < len(headers) else len(current)
            text = (current[:headers[start].start()] + block
                    + ("\n" if end < len(current) else "") + current[end:])
        _write(models_file, text)


def _lock(models_file: Path) -> Path:
    return models_file.with_name(f".{models_file.name}.lock")


def _parse(text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ModelsFileError(f"models.toml cannot be read: {error}") from None


def _format(name: str, table: dict) -> str:
    """The table as TOML: a JSON string, number or boolean is one; a dict an inline table."""
    lines = [f"[{name}]"]
    for key, value in table.items():
        if isinstance(value, dict):
            value = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
        else:
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _write(models_file: Path, text: str) -> None:
    _parse(text)  # what the service will read: never leave it a file it cannot
    with atomic_path(models_file, durable=True) as temp:
        temp.write_text(text)
        os.chmod(temp, models_file.stat().st_mode & 0o7777)  # as the operator set it
