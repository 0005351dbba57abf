"""Structured JSON logs, one line per record. Never pass payloads or addresses to a logger.

Exceptions are logged as their types and stack frames, never their messages: a driver's
message quotes the SQL parameters and the offending value (an email, a phone, a key).
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = exception_summary(record.exc_info[1])
        return orjson.dumps(entry).decode()


def exception_summary(exc: BaseException, frames: int = 12) -> str:
    """`Type (cause Type) at file:line in function <- ...`: where and what, no values."""
    names = [type(exc).__name__]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(names) < 5:
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    where = [f"{_short(f.filename)}:{f.lineno} "
             f"in {f.name}" for f in _frames(exc.__traceback__)[-frames:]]
    text = names[0] + (f" (from {' <- '.join(names[1:])})" if len(names) > 1 else "")
    return text + (" at " + " <- ".join(reversed(where)) if where else "")


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb)) if tb is not None else []


def _short(filename: str) -> str:
    parts = filename.split("/")
    for anchor in ("services", "shared", "touchpoint", "site-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + (anchor == "site-packages"):])
    return parts[-1]


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
