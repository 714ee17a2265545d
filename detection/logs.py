"""Log lines: text, or with ``detection.log_format = json`` one JSON object per line
(python-json-logger). Lines about a job carry its ``sid`` (and an ``event``) as fields, so that
``grep <sid>`` tells its story across web and worker."""
from __future__ import annotations

import json
import logging

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
RELAYED_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the relay adds time and pid
JSON_FIELDS = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "process": "pid", "levelname": "level", "name": "logger"}
RESERVED = {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime",
            *JSON_NAMES.values()}


def formatter(log_format: str, relayed: bool = False) -> logging.Formatter:
    """``relayed``: for a process whose lines another one logs (a worker's, by its daemon)."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter
        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES)
    return logging.Formatter(RELAYED_TEXT_FORMAT if relayed else TEXT_FORMAT)


def format_handlers(log_format: str, logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (the root's by default) the format."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(formatter(log_format))


def relay(log: logging.Logger, line: str, **fields) -> None:
    """Log another process's line: a JSON one with its own level and fields, else as text."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "message" not in record:
        log.info("%s", line, extra=fields)
        return
    level = logging.getLevelName(str(record.pop("level", "INFO")))
    message = record.pop("message")
    # The relaying line has its own time, pid and logger, and logging refuses extras named as a
    # record's attributes (a traceback comes as exc_info): theirs are kept as from_<name>.
    fields = {**{(f"from_{key}" if key in RESERVED else key): value
                 for key, value in record.items()}, **fields}
    log.log(level if isinstance(level, int) else logging.INFO, "%s", message, extra=fields)
