"""Liquid rendering, sandboxed: partials only from the workspace's snippet store (no file
system), bounded output, CPU, values and depth (render_limits.py).

python-liquid never calls Python methods or reads attributes of arbitrary objects:
templates only see the plain dicts/lists/strings we pass in, and `obj.__class__` is just
an undefined key.

Undefined variables are lax by default (as Shopify, Braze and Customer.io): blank when
output, falsy in `if`/`unless`/`case`, equal to `blank`/`empty`/`nil`, empty in loops,
replaced by `default:`; every one met is reported (`Rendered.undefined`). A template
saved with `strict` fails instead.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, TextIO, cast

from liquid import BoundTemplate, Environment, StrictDefaultUndefined, Undefined
from liquid.builtin.expressions import logical
from liquid.builtin.expressions.primitive import Blank, Empty
from liquid.exceptions import (
    ContextDepthError,
    LiquidError,
    OutputStreamLimitError,
    TemplateNotFoundError,
)
from liquid.loader import BaseLoader, TemplateSource

from services.messaging.domain.filters import FILTERS, RenderOptions, render_options
from services.messaging.domain.render_limits import (
    OUTPUT_LIMIT,
    LimitedContext,
    TemplateLimitError,
    cpu_budget,
    guarded,
)

_snippets: ContextVar[Mapping[str, str] | None] = ContextVar("snippets", default=None)
_undefined: ContextVar[list[dict[str, Any]] | None] = ContextVar("undefined", default=None)


class _SnippetLoader(BaseLoader):
    """`{% render 'footer' %}` reads the render's snippets (the workspace's), nothing else."""

    def get_source(self, env: Environment, template_name: str, *, context: Any = None,
                   **kwargs: object) -> TemplateSource:
        try:
            return TemplateSource((_snippets.get() or {})[template_name], template_name, None)
        except KeyError as exc:
            raise TemplateNotFoundError(template_name, token=None) from exc


class _Template(BoundTemplate):
    context_class = LimitedContext


def _where(token: Any) -> tuple[int, int]:
    if token is None or token.start_index < 0:
        return 0, 0
    context = LiquidError("", token=token).context()
    return (context[0], context[1]) if context else (0, 0)


class _Recorded(Undefined):
    """Lax: blank and falsy, and remembered (name, line, column) for the preview."""

    __slots__ = ()

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        seen = _undefined.get()
        if seen is not None and len(seen) < 100:
            hint = kwargs.get("hint") or ""
            path = hint.removesuffix(" is undefined").strip("'") or name
            line, column = _where(kwargs.get("token"))
            entry = {"name": path, "line": line, "column": column}
            if entry not in seen:
                seen.append(entry)


def _lax_eq(left: object, right: object) -> bool:
    """Liquid's `==`, plus: a lax undefined equals `blank` and `empty` (as marketers expect
    from Shopify, Braze and Customer.io). Strict undefined variables raise before this."""
    if (type(left) is _Recorded and isinstance(right, (Blank, Empty))) or (
            type(right) is _Recorded and isinstance(left, (Blank, Empty))):
        return True
    return _liquid_eq(left, right)


# liquid compares through this module function (`==`, `!=`, `case`/`when`).
_liquid_eq = logical._eq
logical._eq = _lax_eq


class _Sandboxed(Environment):
    template_class = _Template
    loop_iteration_limit = 10_000
    output_stream_limit = OUTPUT_LIMIT
    local_namespace_limit = 64 * 1024
    context_depth_limit = 20

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters.update(FILTERS)
        self.filters = {name: guarded(name, f) for name, f in self.filters.items()}


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


_ENVS = {(escape, strict): _Sandboxed(autoescape=escape, loader=_SnippetLoader(),
                                      undefined=StrictDefaultUndefined if strict else _Recorded)
         for escape in (False, True) for strict in (False, True)}


def environment(*, escape: bool = False, strict: bool = False) -> Environment:
    """The sandboxed environment templates are parsed with."""
    return _ENVS[escape, strict]


class RenderError(Exception):
    """The template can't be rendered with this data: the send fails with this reason."""

    def __init__(self, reason: str, *, limit: bool = False) -> None:
        super().__init__(reason)
        self.limit = limit  # a render limit, not the data


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    html: str | None
    text: str | None
    undefined: list[dict[str, Any]] = field(default_factory=list, compare=False)


@lru_cache(maxsize=512)
def _parsed(source: str, escape: bool, strict: bool) -> BoundTemplate:
    # Parsing costs more than rendering; a template source is parsed once per process.
    return _ENVS[escape, strict].from_string(source)


@contextmanager
def render_scope(snippets: Mapping[str, str], options: RenderOptions
                  ) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    tokens = (_snippets.set(snippets), _undefined.set(seen))
    try:
        with cpu_budget(), render_options(options):
            yield seen
    finally:
        _undefined.reset(tokens[1])
        _snippets.reset(tokens[0])


def render(*, subject: str | None, html: str | None, text: str | None, data: dict[str, Any],
           strict: bool = False, snippets: Mapping[str, str] | None = None,
           options: RenderOptions | None = None) -> Rendered:
    """Render every part or none, within the render limits (one CPU budget for all parts).
    Raises RenderError (`limit` set for a render limit)."""
    try:
        with render_scope(snippets or {}, options or RenderOptions()) as seen:
            out: dict[str, str | None] = {}
            for part, source in (("subject", subject), ("html", html), ("text", text)):
                before = len(seen)
                out[part] = (_render(_parsed(source, part == "html", strict), data)
                             if source else None)
                for entry in seen[before:]:
                    entry["part"] = part
            return Rendered(subject=out["subject"].strip() if out["subject"] else out["subject"],
                            html=out["html"], text=out["text"], undefined=seen)
    except TemplateLimitError as exc:
        raise RenderError(str(exc.message), limit=True) from exc
    except ContextDepthError as exc:  # a partial that renders itself, or too deep a chain
        raise RenderError("template limit: partials nested too deep", limit=True) from exc
    except TemplateNotFoundError as exc:  # a snippet deleted after the template was saved
        raise RenderError(f"partial '{exc.message}' does not exist") from exc
    except LiquidError as exc:
        first = str(exc).splitlines()[0][:500]
        if "limit" in first:  # liquid's own (output stream, loop iterations, namespace)
            raise RenderError(f"template limit: {first}", limit=True) from exc
        raise RenderError(first) from exc
    except RecursionError as exc:
        raise RenderError("template limit: nesting too deep", limit=True) from exc
    except MemoryError as exc:
        raise RenderError("template limit: out of memory", limit=True) from exc
    except (ArithmeticError, ValueError, TypeError, LookupError, OSError) as exc:
        # whatever else a template can provoke fails this message, never the consumer
        raise RenderError(f"render: {type(exc).__name__}") from exc


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
