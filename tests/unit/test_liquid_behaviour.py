"""Templates as marketers write them, case by case against the expected output (pure)."""

from typing import Any

import pytest

from services.messaging.domain.filters import RenderOptions
from services.messaging.domain.render import RenderError, render
from services.messaging.domain.template_check import check_source

DATA: dict[str, Any] = {
    "profile": {"traits": {"first_name": "Ada", "tags": ["vip", "eu"]}, "metrics": {},
                "timezone": "Europe/Paris"},
    "event": {"properties": {"total": 1234.5, "items": [{"name": "Mug"}, {"name": "Tea"}]},
              "occurred_at": "2026-03-01T23:30:00Z"},
}


def text(source: str, data: dict[str, Any] | None = None, **kwargs: Any) -> str:
    out = render(subject=None, html=None, text=source, data=DATA if data is None else data,
                 **kwargs)
    assert out.text is not None
    return out.text


@pytest.mark.parametrize(("source", "expected"), [
    # a bare missing variable renders empty
    ("Hi {{ profile.traits.nickname }}!", "Hi !"),
    ("[{{ nothing }}]", "[]"),
    # falsy in if / unless / case
    ("{% if profile.traits.nickname %}yes{% else %}no{% endif %}", "no"),
    ("{% if profile.missing.deeper.still %}yes{% else %}no{% endif %}", "no"),
    ("{% unless profile.traits.nickname %}none{% endunless %}", "none"),
    ("{% case profile.traits.plan %}{% when 'gold' %}G{% else %}other{% endcase %}", "other"),
    # equal to blank and empty, and to nil
    ("{% if profile.traits.nickname == blank %}blank{% endif %}", "blank"),
    ("{% if profile.traits.nickname == empty %}empty{% endif %}", "empty"),
    ("{% if profile.traits.nickname == nil %}nil{% endif %}", "nil"),
    ("{% if profile.traits.first_name == blank %}blank{% else %}set{% endif %}", "set"),
    # loops over nothing run their else
    ("{% for t in profile.traits.missing_list %}{{ t }}{% else %}no tags{% endfor %}",
     "no tags"),
    ("{% for t in profile.traits.tags %}{{ t }} {% endfor %}", "vip eu "),
    # default
    ("Hi {{ profile.traits.nickname | default: 'there' }}", "Hi there"),
    ("Hi {{ profile.traits.first_name | default: 'there' }}", "Hi Ada"),
    ("{{ profile.traits.nickname | size }}", "0"),
    ("{{ profile.traits.nickname | upcase }}|", "|"),
])
def test_undefined_is_lax_by_default(source: str, expected: str) -> None:
    assert text(source) == expected


def test_undefined_variables_are_listed_with_their_place() -> None:
    out = render(subject="Hi {{ profile.traits.nickname }}", html=None,
                 text="line one\n  {% if event.coupon %}x{% endif %}{{ nope }}", data=DATA)
    assert out.undefined == [
        {"name": "profile.traits.nickname", "line": 1, "column": 6, "part": "subject"},
        {"name": "event.coupon", "line": 2, "column": 8, "part": "text"},
        {"name": "nope", "line": 2, "column": 38, "part": "text"},
    ]


@pytest.mark.parametrize("source", [
    "{{ profile.traits.nickname }}",
    "{% if profile.traits.nickname %}x{% endif %}",
    "{% for t in profile.traits.missing %}{% endfor %}",
])
def test_strict_templates_fail_instead(source: str) -> None:
    with pytest.raises(RenderError, match="undefined"):
        text(source, strict=True)
    assert text("{{ profile.traits.nickname | default: 'x' }}", strict=True) == "x"


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ event.properties.total | money }}", "$1,234.50"),
    ("{{ event.properties.total | money: 'EUR' }}", "€1,234.50"),
    ("{{ 7 | money: 'CHF' }}", "7.00 CHF"),
    ("{{ -3.5 | money }}", "-$3.50"),
    ("{{ 1500 | money: 'JPY' }}", "¥1,500"),
    ("{{ '12.30' | money }}", "$12.30"),
    ("[{{ profile.metrics.ltv | money }}]", "[]"),
    ("[{{ 'abc' | money }}]", "[]"),
    ("{{ event.occurred_at | date: '%Y-%m-%d %H:%M' }}", "2026-03-01 23:30"),
    ("{{ event.occurred_at | date: '%H:%M', 'America/New_York' }}", "18:30"),
    ("[{{ event.missing | date: '%Y' }}]", "[]"),
    ("{{ 'not a date' | date: '%Y' }}", "not a date"),
    ("{{ 'a b&c=d/é' | url_encode }}", "a+b%26c%3Dd%2F%C3%A9"),
    ("{{ event.properties.items | json }}", '[{"name":"Mug"},{"name":"Tea"}]'),
    ("{{ profile.traits.tags | json }}", '["vip","eu"]'),
    ("{{ profile.missing | json }}", "null"),
    ("{{ 'Grüße \"q\"' | json }}", '"Grüße \\"q\\""'),
])
def test_filters(source: str, expected: str) -> None:
    assert text(source, options=RenderOptions()) == expected


@pytest.mark.parametrize(("source", "options", "expected"), [
    ("{{ 19.995 | money }}", RenderOptions(currency="GBP"), "£20.00"),
    # the customer's zone (Paris is UTC+1 in March): 23:30 UTC is the next day there
    ("{{ event.occurred_at | date: '%Y-%m-%d %H:%M' }}",
     RenderOptions(timezone="Europe/Paris"), "2026-03-02 00:30"),
    ("{{ event.occurred_at | date: '%b %d' }}", RenderOptions(timezone="Nope/Zone"), "Mar 01"),
])
def test_filters_in_the_workspace_settings(source: str, options: RenderOptions,
                                           expected: str) -> None:
    assert text(source, options=options) == expected


def test_json_is_escaped_in_html_like_everything_else() -> None:
    out = render(subject=None, html="{{ x | json }}", text=None, data={"x": {"a": "<b>"}})
    assert out.html == "{&#34;a&#34;:&#34;&lt;b&gt;&#34;}"


def test_code_names_its_pool_then_writes_the_code() -> None:
    discovering = RenderOptions()
    assert text("Use {{ 'thanks-20' | code }}", options=discovering) == "Use [thanks-20 code]"
    assert discovering.pools == ["thanks-20"]
    assert text("Use {{ 'thanks-20' | code }}",
                options=RenderOptions(codes={"thanks-20": "TH-ABC"})) == "Use TH-ABC"
    with pytest.raises(RenderError, match="code pool other"):
        text("{{ 'other' | code }}", options=RenderOptions(codes={"thanks-20": "TH-ABC"}))


def test_partials_come_from_the_snippets_only() -> None:
    snippets = {"footer": "-- {{ profile.traits.first_name }}, {{ shop | default: 'us' }}",
                "sig": "{% render 'footer' %}!"}
    # the template's globals (profile, event, ...) are seen by its partials
    assert text("Hello{% render 'footer' %}", snippets=snippets) == "Hello-- Ada, us"
    assert text("{% render 'footer', profile: profile %}", snippets=snippets) == "-- Ada, us"
    assert text("{% render 'sig', profile: profile %}", snippets=snippets) == "-- Ada, us!"
    with pytest.raises(RenderError, match="not found|footer"):
        text("{% render 'footer' %}")


@pytest.mark.parametrize(("source", "message", "line", "column"), [
    ("Hi\n  {{ name | shout }}", "unknown filter 'shout'", 2, 12),
    ("{% render 'nope' %}", "partial 'nope' does not exist", 1, 10),
    ("ok\nok\n{% if %}", "missing expression", 3, 3),
    ("{{ x | money: 'EUR' | date: '%Y' | json | url_encode }}", None, 0, 0),
    ("{% render 'footer' %}", None, 0, 0),
    ("{% render 'bad' %}", "unknown filter 'loud' (in snippet 'bad')", 1, 7),
])
def test_refused_at_save_with_line_and_column(source: str, message: str | None, line: int,
                                              column: int) -> None:
    problems = check_source(source, snippets={"footer": "x", "bad": "{{ x | loud }}"})
    if message is None:
        assert problems == []
    else:
        assert problems[0] == {"message": message, "line": line, "column": column}

