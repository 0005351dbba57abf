"""What a DLQ record says about why it is there (`dlq.error`): the error's type and where,
never a value from the record.

The DLQ is read back over the API and kept as long as the topic's retention. An error's
own text may quote the refused input: pydantic's `input_value`, a driver's `DETAIL: Key
(email)=(...)`, a field path through the keys of a customer's traits. So a validation
error is written as each error's location and pydantic error type, with location parts
that are not identifier-like (free-form keys, which may be an address) written `*`; any
other exception as its type and stack frames (`shared.logging.exception_summary`).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from shared.contracts.storable import Unstorable
from shared.logging import exception_summary

MAX_LENGTH = 1000
# A model's field name, or a key that reads like one: kept in a location.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def error_text(exc: BaseException) -> str:
    """`dlq.error` for `exc` (an InvalidMessage raised from a ValidationError is described
    by that error)."""
    cause = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(cause, ValidationError):
        return validation_text(cause)
    return exception_summary(exc)[:MAX_LENGTH]


def validation_text(exc: ValidationError) -> str:
    """`loc: type` per error, `; `-joined: `timestamp: datetime_parsing`,
    `traits.*: value_error (contains NUL or a control character)` (the place below a
    top-level field of an unstorable value is not said: it is a path of keys)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(_part(p) for p in error["loc"]) or "<root>"
        what = error["type"]
        reason = (error.get("ctx") or {}).get("error")
        if isinstance(reason, Unstorable):  # fixed text from `storable`, path scrubbed
            where = ".".join(p for p in (where if where != "<root>" else "",
                                         _path(reason.field)) if p) or where
            what += f" ({reason.reason})"
        parts.append(f"{where}: {what}")
    return "; ".join(parts)[:MAX_LENGTH]


def _part(part: int | str) -> str:
    return str(part) if isinstance(part, int) or _NAME.fullmatch(part) else "*"


def _path(dotted: str) -> str:
    """The top-level field of a dotted path; what lies below it (keys, which may hold dots
    themselves) is `*`."""
    top, _, rest = dotted.partition(".")
    return _part(top) + (".*" if rest else "")
