"""Liquid rendering, sandboxed: no loader (no file system), bounded loops and output.

python-liquid never calls Python methods or reads attributes of arbitrary objects:
templates only see the plain dicts/lists/strings we pass in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liquid import Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError


class _Sandboxed(Environment):
    loop_iteration_limit = 10_000
    output_stream_limit = 256 * 1024
    local_namespace_limit = 64 * 1024
    context_depth_limit = 20


_html = _Sandboxed(autoescape=True, undefined=StrictDefaultUndefined)
_text = _Sandboxed(autoescape=False, undefined=StrictDefaultUndefined)


class RenderError(Exception):
    """The template can't be rendered with this data: the send fails with this reason."""


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    html: str | None
    text: str | None


def check_syntax(source: str | None) -> str | None:
    """None when the template parses, else the parse error."""
    if not source:
        return None
    try:
        _text.from_string(source)
    except LiquidError as exc:
        return str(exc)
    return None


def render(*, subject: str | None, html: str | None, text: str | None,
           data: dict[str, Any]) -> Rendered:
    try:
        return Rendered(
            subject=_text.from_string(subject).render(**data).strip() if subject else None,
            html=_html.from_string(html).render(**data) if html else None,
            text=_text.from_string(text).render(**data) if text else None,
        )
    except LiquidError as exc:
        raise RenderError(str(exc).splitlines()[0][:500]) from exc
