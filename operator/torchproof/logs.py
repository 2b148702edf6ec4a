"""Logging for every subcommand: one level and one format (text, or one JSON object per line) for torchproof,
kopf and the libraries under them.

kopf is started with `kopf.operator()`, not its own CLI, so it never configures logging itself: its loggers
(`kopf.*`) propagate to the root handler set here and follow the same level and format. The JSON formatter is
the standard library's: a fixed set of keys a log pipeline can rely on (python-json-logger, which kopf
brings, would add every `extra` attribute, kopf's settings objects among them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose own warnings repeat what a command already says in one line (urllib3's retries).
QUIET_BELOW_DEBUG = ("urllib3",)
PROGRESS_LOGGER = "torchproof.progress"  # progress of long runs: shown unless --log-level error


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the exception as text.
    kopf's per-object loggers add the object they are about."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            doc["object"] = {k: ref[k] for k in ("kind", "namespace", "name") if ref.get(k)}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


def add_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`-v`, `--log-level`, `--log-format`. Without `defaults` (the copy on each subcommand) an option not given
    there leaves the value given before the subcommand."""
    unset = argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=0 if defaults else unset,
                        help="more logging: -v info, -vv debug (--log-level wins when given)")
    parser.add_argument("--log-level", choices=LEVELS, default=None if defaults else unset,
                        help="debug, info, warning (default) or error")
    parser.add_argument("--log-format", choices=FORMATS, default="text" if defaults else unset,
                        help="text (default) or json: one object per line with time, level, logger, message")


def level_of(args: argparse.Namespace) -> int:
    if args.log_level:
        return int(getattr(logging, args.log_level.upper()))
    return (logging.WARNING, logging.INFO)[args.verbose] if args.verbose < 2 else logging.DEBUG


def configure(args: argparse.Namespace, stream: TextIO | None = None) -> None:
    """Set the root logger (and so kopf's) to the chosen level and format, on stderr."""
    level = level_of(args)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.ERROR)
    logging.getLogger(PROGRESS_LOGGER).setLevel(min(level, logging.INFO) if level < logging.ERROR else level)
