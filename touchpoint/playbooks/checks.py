"""Checks before install: Liquid syntax with a line and column, journey documents as the
journey service validates them. Pure (the services repeat their own checks on save)."""

from __future__ import annotations

import re
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError
from pydantic import ValidationError

from services.journey.domain.document import JourneyDocument

_PARSER = Environment()
_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
PARTS = ("subject", "html", "text")


def _line_column(source: str, index: int) -> tuple[int, int]:
    before = source[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def liquid_error(source: str) -> str | None:
    """None when `source` parses, else `line L, column C: message`. python-liquid gives no
    position for errors at the end of an expression; then the first `{{ }}` or `{% %}` that
    fails on its own is the place, and an unclosed block is reported at the end."""
    try:
        _PARSER.parse(source)
        return None
    except LiquidError as exc:
        message = str(getattr(exc, "message", "") or exc).splitlines()[0]
        index = getattr(getattr(exc, "token", None), "start_index", -1)
    if index is None or index < 0:
        index = len(source)
        for match in _MARKUP.finditer(source):
            text = match.group(0)
            if text.startswith("{%") and not re.match(r"\{%-?\s*(assign|echo|cycle|increment|"
                                                      r"decrement|render|include)\b", text):
                continue  # a block tag alone is unclosed by nature
            try:
                _PARSER.parse(text)
            except LiquidError:
                index = match.start()
                break
    line, column = _line_column(source, index)
    return f"line {line}, column {column}: {message}"


def template_errors(key: str, template: dict[str, Any]) -> list[str]:
    """`templates/KEY.json` part: line L, column C: message, for each part that fails."""
    return [f"template {key} {part}: {err}" for part in PARTS
            if isinstance(template.get(part), str) and (err := liquid_error(template[part]))]


def journey_errors(document: dict[str, Any]) -> list[str]:
    """The journey service's validation, field by field."""
    try:
        JourneyDocument.model_validate(document)
    except ValidationError as exc:
        return [f"journey {'.'.join(str(p) for p in e.get('loc', ())) or 'document'}: "
                f"{e.get('msg')}" for e in exc.errors()]
    return []


def normalised(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the journey service stores it (durations as ISO text, defaults
    filled in), so what is installed compares equal to what would be installed."""
    out: dict[str, Any] = JourneyDocument.model_validate(document).model_dump(
        mode="json", by_alias=True, exclude_none=True)
    return out
