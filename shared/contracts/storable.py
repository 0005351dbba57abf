"""What the pipeline can store: one rule shared by ingest (at the edge) and every reader.

Postgres `text` and `jsonb` cannot hold NUL, other C0 control characters are never
legitimate in names, ids or traits, and a document nested hundreds of levels deep breaks
JSON encoders and recursive readers downstream. Ingest rejects what this finds (a 200 must
mean the event will be applied); the topic models run the same check, so a message that
would fail downstream fails at ingest, and an old one on the topic is a clean DLQ entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_DEPTH = 32
# C0 controls except tab (\x09), newline (\x0a) and carriage return (\x0d).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The same characters in JSON text: raw, or as an escape (\u0000, \b, \f...) that is not
# itself escaped (an even run of backslashes before it).
JSON_CONTROL = re.compile(
    rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|"
    rb"(?<!\\)(?:\\\\)*\\(?:u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|[bf])")
# The same characters as a JSON-schema pattern (ECMA-262 and Python `re` read it alike):
# the OpenAPI documents say every string a request may carry does `not` match it.
CONTROL_PATTERN = r"[\u0000-\u0008\u000b\u000c\u000e-\u001f]"
CONTROL_MESSAGE = "contains NUL or a control character"
DEPTH_MESSAGE = f"nested deeper than {MAX_DEPTH} levels"

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CLOCK_AHEAD = timedelta(hours=24)


class Unstorable(ValueError):
    """A value the pipeline cannot store: `field` is its dotted path, `reason` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def check_storable(document: Mapping[str, Any], *, encoded: bytes | None = None) -> None:
    """Raise Unstorable for the first string (key or value) with a control character, or
    the first container nested deeper than MAX_DEPTH (a top-level field's value is level 1).

    `encoded`: the document as orjson wrote it, when the caller has it (ingest does; orjson
    always escapes control characters): the common case is then a few substring scans in C,
    and the walk that names the field only runs when they find a control character or more
    containers than MAX_DEPTH.
    """
    strings, containers = True, True
    if encoded is not None:
        strings = (b"\\u00" in encoded or b"\\b" in encoded or b"\\f" in encoded) and \
            JSON_CONTROL.search(encoded) is not None
        containers = encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH
        if not (strings or containers):
            return
    for key, value in document.items():
        if strings and isinstance(key, str) and CONTROL.search(key):
            raise Unstorable(str(key), "field name " + CONTROL_MESSAGE)
        _check(value, str(key), 1, strings)


def _check(value: Any, path: str, depth: int, strings: bool) -> None:
    if isinstance(value, str):
        if strings and CONTROL.search(value):
            raise Unstorable(path, CONTROL_MESSAGE)
    elif isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise Unstorable(path, DEPTH_MESSAGE)
        for key, item in value.items():
            if strings and isinstance(key, str) and CONTROL.search(key):
                raise Unstorable(path, "a key " + CONTROL_MESSAGE)
            _check(item, f"{path}.{key}", depth + 1, strings)
    elif isinstance(value, list | tuple):
        if depth > MAX_DEPTH:
            raise Unstorable(path, DEPTH_MESSAGE)
        for index, item in enumerate(value):
            _check(item, f"{path}.{index}", depth + 1, strings)


def has_control(text: str) -> bool:
    """Does `text` hold NUL or another C0 control character (tab, newline, CR aside)?"""
    return CONTROL.search(text) is not None


def plausible_event_time(timestamp: datetime, received_at: datetime) -> datetime:
    """`timestamp`, unless it is before 1970 or more than 24 h after `received_at`: then
    `received_at`. One absurd client clock (year 1 or 9999) must not poison a profile."""
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    if timestamp < EARLIEST_EVENT_TIME or received_at - timestamp < -MAX_CLOCK_AHEAD:
        return received_at
    return timestamp


def finite_time(value: datetime | None, now: datetime) -> datetime | None:
    """A timestamptz read back from Postgres, made usable: asyncpg decodes -infinity and
    +infinity (left by events stored before the rule above) as naive datetime.min/max,
    which breaks every comparison with an aware time. They read as 1970 and `now`."""
    if value is None or value.tzinfo is not None:
        return value
    if value == datetime.min:
        return EARLIEST_EVENT_TIME
    if value == datetime.max:
        return now
    return value.replace(tzinfo=UTC)
