"""Render limits (issue 13 item 4): no template allocates or spins past the limits."""

import time
import tracemalloc

import pytest

from services.messaging.domain.render import RenderError, render
from services.messaging.domain.template_check import check_limits

MB = 1024 * 1024
# The attack as reported: 257 bytes, ten chained `replace`, each multiplying the size by 5.
ATTACK = "{{ 'aaaaaaaaa' " + "| replace: 'a', 'aaaaa' " * 10 + "}}"


def _render_measured(source: str) -> tuple[RenderError | None, float, int]:
    tracemalloc.start()
    started = time.thread_time()
    error = None
    try:
        render(subject=None, html=None, text=source, data={"profile": {}})
    except RenderError as exc:
        error = exc
    finally:
        cpu = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, cpu, peak


def test_the_reported_attack_is_257_bytes() -> None:
    assert len(ATTACK.encode()) == 257


@pytest.mark.parametrize("source", [
    ATTACK,
    # the same growth through append, and through a loop re-assigning
    "{% assign s = 'x' %}" + "{% assign s = s | append: s %}" * 40 + "{{ s }}",
    "{% assign s = 'xxxxxxxxxxxxxxxx' %}{% for i in (1..1000) %}"
    "{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}{{ s }}",
    # numbers: squaring in a loop, huge `times`
    "{% assign n = 2 %}{% for i in (1..100) %}{% assign n = n | times: n %}{% endfor %}{{ n }}",
    "{{ 10 | times: 1000000000 | times: 1000000000 | times: 1000000000 }}",
    # sequences: a range turned into a list, join of one long value repeated
    "{{ (1..1000000000) | reverse | size }}",
    "{% assign a = 'x,y' | split: ',' %}"
    + "{% assign a = a | concat: a %}" * 30 + "{{ a | join }}",
    "{{ 'abcdefgh' | replace: '', 'abcdefghabcdefghabcdefghabcdefgh' "
    "| replace: '', 'abcdefghabcdefghabcdefghabcdefgh' "
    "| replace: '', 'abcdefghabcdefghabcdefghabcdefgh' "
    "| replace: '', 'abcdefghabcdefghabcdefghabcdefgh' }}",
    # nested loops: over the iteration limit at once, and just under it but long
    "{% for i in (1..10000) %}{% for j in (1..10000) %}x{% endfor %}{% endfor %}",
    "{% for i in (1..9999) %}{% for j in (1..1) %}{{ i | plus: j }}{% endfor %}{% endfor %}"
    * 400,
])
def test_render_stops_at_a_limit(source: str) -> None:
    error, cpu, peak = _render_measured(source)
    assert error is not None and error.limit, error
    assert str(error).startswith("template limit")
    assert cpu < 1.5  # the 1 s deadline, plus the step that crossed it
    assert peak < 64 * MB


def test_output_of_a_megabyte_renders_and_one_byte_more_does_not() -> None:
    fits = "{% for i in (1..1024) %}{{ k }}{% endfor %}"
    out = render(subject=None, html=None, text=fits, data={"k": "x" * 1024})
    assert out.text is not None and len(out.text) == MB
    with pytest.raises(RenderError, match="limit"):
        render(subject=None, html=None, text=fits + "!", data={"k": "x" * 1024})


def test_save_time_trial_render_reports_the_limit() -> None:
    assert check_limits(subject=None, html=None, text=ATTACK) is not None
    assert check_limits(subject="Hi {{ profile.traits.first_name }}", html="<p>ok</p>",
                        text=None) is None
    # a partial that renders itself
    assert check_limits(subject=None, html=None, text="{% render 'a' %}",
                        snippets={"a": "x{% render 'a' %}"}) == (
        "template limit: partials nested too deep")
    # an error that depends on the data is not a limit: it passes the trial
    assert check_limits(subject=None, html=None, text="{{ 1 | divided_by: 0 }}") is None


@pytest.mark.parametrize("source", [
    "{{ '1e100000000' | round }}", "{{ '1e100000000' | ceil }}",
    "{{ '1e1000000' | divided_by: '1e-1000000' | ceil }}", "{{ 1 | divided_by: 0 }}",
])
def test_what_a_filter_raises_fails_the_message_not_the_consumer(source: str) -> None:
    with pytest.raises(RenderError):
        render(subject=None, html=None, text=source, data={})


VALUES = ["'abc'", "''", "1", "-1", "0", "1.5", "'1e400'", "'-1e400'", "nil", "true", "(1..3)",
          "x.list", "x.dict", "x.missing", "'2026-01-01'", "'%'", "x.big"]


def test_every_filter_with_odd_values_renders_or_raises_render_error() -> None:
    from services.messaging.domain.render import environment

    data = {"x": {"list": [1, "a", None, {"k": 1}], "dict": {"a": [1]}, "big": 2**62}}
    for name in sorted(environment().filters):
        for value in VALUES:
            for args in ("", ": 1", ": 'a'", ": 'a', 'b'", ": nil", ": '1e400'", ": x.list",
                         ": 0"):
                source = f"{{{{ {value} | {name}{args} }}}}"
                try:
                    render(subject=None, html=None, text=source, data=data)
                except RenderError:
                    pass
