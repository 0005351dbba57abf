"""What is refused at save, with line and column: a syntax error, an unknown filter, a
missing partial, and a template that goes over a render limit on a sample context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liquid.exceptions import LiquidError

from services.messaging.domain.filters import RenderOptions
from services.messaging.domain.render import RenderError, environment, render, render_scope

# A trial render's data: enough for a template to take its usual branches.
SAMPLE_PROFILE: dict[str, Any] = {
    "id": "sample", "email": "sample@example.com", "phone": "+15550000000",
    "timezone": "UTC", "traits": {"first_name": "Sam", "last_name": "Sample"},
    "metrics": {"order_count": 2, "total_revenue": 120.5}, "lifecycle_stage": "active"}


def _position(exc: LiquidError) -> tuple[int, int]:
    context = exc.context()
    return (context[0], context[1]) if context else (1, 0)


def _problem(message: str, line: int, column: int) -> dict[str, Any]:
    return {"message": message, "line": line, "column": column}


def check_source(source: str | None, *,
                 snippets: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Problems of one Liquid source (empty when it is fine), each with line and column."""
    if not source:
        return []
    env = environment()
    with render_scope(snippets or {}, RenderOptions()):
        try:
            template = env.from_string(source)
            analysis = template.analyze(include_partials=True)
        except LiquidError as exc:
            line, column = _position(exc)
            message = str(exc.message) if exc.message else type(exc).__name__
            if type(exc).__name__ == "TemplateNotFoundError":
                message = f"partial '{exc.message}' does not exist"
            return [_problem(message, line, column)]
    problems = []
    for name, spans in analysis.filters.items():
        if name in env.filters:
            continue
        for span in spans:
            where = source if not span.template_name else (snippets or {}).get(
                span.template_name, "")
            line, column = span.line_col(where) if where else (1, 0)
            inside = f" (in snippet '{span.template_name}')" if span.template_name else ""
            problems.append(_problem(f"unknown filter '{name}'{inside}", line, column))
    return problems


def check_limits(*, subject: str | None, html: str | None, text: str | None,
                 snippets: Mapping[str, str] | None = None) -> str | None:
    """A trial render against a sample context: the reason when it goes over a render
    limit, else None (other render errors depend on the data and pass)."""
    data = {"profile": SAMPLE_PROFILE, "event": {}, "journey": {}, "message_id": "trial",
            "unsubscribe_url": "https://example.com/u/trial"}
    try:
        render(subject=subject, html=html, text=text, data=data, snippets=snippets)
    except RenderError as exc:
        return str(exc) if exc.limit else None
    return None


def check_syntax(source: str | None) -> str | None:
    """None when the template is fine, else its first problem."""
    problems = check_source(source)
    return problems[0]["message"] if problems else None
