"""Liquid rendering, sandboxed: no loader (no file system), bounded loops, output and depth.

python-liquid never calls Python methods or reads attributes of arbitrary objects:
templates only see the plain dicts/lists/strings we pass in, and `obj.__class__` is just
an undefined key. Every limit below bounds render time as well as size.
"""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, TextIO, cast

from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError, OutputStreamLimitError


class _Sandboxed(Environment):
    loop_iteration_limit = 10_000
    output_stream_limit = 256 * 1024
    local_namespace_limit = 64 * 1024
    context_depth_limit = 20


class _Output:
    """The sandbox's output limit, counted cheaply. liquid's own buffer encodes every write
    to UTF-8 to count its bytes, a fifth of a render's time. A character is at most 4 bytes,
    so counting characters is enough up to a quarter of the limit; past that the bytes are
    counted exactly, as liquid does. Same limit, same error. Writes are collected in a list
    and joined once (cheaper than StringIO.write through super())."""

    __slots__ = ("parts", "limit", "chars", "bytes")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.limit, self.chars, self.bytes = limit, 0, -1  # bytes: -1 while counting chars

    def getvalue(self) -> str:
        return "".join(self.parts)

    def write(self, s: str) -> int:
        if self.bytes < 0:
            self.chars += len(s)
            if self.chars * 4 <= self.limit:
                self.parts.append(s)
                return len(s)
            self.bytes = len(self.getvalue().encode())
        self.bytes += len(s.encode())
        if self.bytes > self.limit:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        self.parts.append(s)
        return len(s)


def _render(template: BoundTemplate, data: dict[str, Any]) -> str:
    """`template.render(**data)` with the cheaper output buffer."""
    context = template.context_class(template, globals=template.make_globals(data))
    out = _Output(_Sandboxed.output_stream_limit)
    # liquid only calls write() on it (duck-typed). `capture` renders into a buffer of
    # liquid's own, with the full limit; what it captured is counted here when output.
    template.render_with_context(context, cast(TextIO, out))
    return out.getvalue()


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


@lru_cache(maxsize=512)
def _parsed(source: str, escape: bool) -> BoundTemplate:
    # Parsing costs more than rendering; a template source is parsed once per process.
    return (_html if escape else _text).from_string(source)


def render(*, subject: str | None, html: str | None, text: str | None,
           data: dict[str, Any]) -> Rendered:
    """Render every part or none: any undefined variable or limit raises RenderError."""
    try:
        return Rendered(
            subject=_render(_parsed(subject, False), data).strip() if subject else None,
            html=_render(_parsed(html, True), data) if html else None,
            text=_render(_parsed(text, False), data) if text else None,
        )
    except LiquidError as exc:
        raise RenderError(str(exc).splitlines()[0][:500]) from exc


def template_data(context: dict[str, Any], *, message_id: str,
                  unsubscribe_url: str | None) -> dict[str, Any]:
    """What a template sees: `profile`, `event`, `journey` from the command, plus ours."""
    data = {"profile": context.get("profile") or {}, "event": context.get("event") or {},
            "journey": context.get("journey") or {}, "message_id": message_id}
    if unsubscribe_url:
        data["unsubscribe_url"] = unsubscribe_url
    return data


def with_unsubscribe_footer(rendered: Rendered, *, url: str,
                            sources: tuple[str | None, ...]) -> Rendered:
    """Add the unsubscribe footer unless the template already placed `unsubscribe_url`."""
    if any(s and "unsubscribe_url" in s for s in sources):
        return rendered
    link = html_lib.escape(url, quote=True)
    html = rendered.html
    if html is not None:
        footer = (f'<p style="font-size:12px;color:#888">'
                  f'<a href="{link}">Unsubscribe</a></p>')
        closing = html.lower().rfind("</body>")
        html = html + footer if closing == -1 else html[:closing] + footer + html[closing:]
    text = rendered.text
    if text is not None:
        text = f"{text.rstrip()}\n\n--\nUnsubscribe: {url}\n"
    return replace(rendered, html=html, text=text)
