import pytest

from services.messaging.domain.render import RenderError, render
from services.messaging.domain.template_check import check_syntax


def test_html_is_escaped_text_is_not() -> None:
    out = render(subject="Hi {{ profile.name }}", html="<b>{{ profile.name }}</b>",
                 text="{{ profile.name }}", data={"profile": {"name": "<Ada>"}})
    assert out.html == "<b>&lt;Ada&gt;</b>" and out.text == "<Ada>" and out.subject == "Hi <Ada>"


def test_strict_template_fails_on_a_missing_variable_instead_of_half_rendering() -> None:
    with pytest.raises(RenderError, match="undefined"):
        render(subject=None, html=None, text="Hi {{ profile.first_name }}", data={"profile": {}},
               strict=True)


def test_defaults_are_allowed() -> None:
    out = render(subject=None, html=None, text="Hi {{ profile.first_name | default: 'there' }}",
                 data={"profile": {}})
    assert out.text == "Hi there"


@pytest.mark.parametrize("source", [
    "{% include 'etc/passwd' %}",
    "{% for i in (1..100000000) %}x{% endfor %}",
])
def test_sandbox(source: str) -> None:
    with pytest.raises(RenderError):
        render(subject=None, html=None, text=source, data={"profile": {}})


def test_python_internals_are_just_undefined_keys() -> None:
    out = render(subject=None, html=None, text="[{{ profile.__class__ }}]", data={"profile": {}})
    assert out.text == "[]"
    with pytest.raises(RenderError, match="undefined"):
        render(subject=None, html=None, text="{{ profile.__class__ }}", data={"profile": {}},
               strict=True)


def test_syntax_check() -> None:
    assert check_syntax("{% if %}") is not None
    assert check_syntax("{{ a }}") is None



@pytest.mark.parametrize("chunk", ["x" * 1000, "é" * 1000, "😀" * 1000])
def test_output_is_bounded_in_bytes(chunk: str) -> None:
    limit = 1024 * 1024
    per = len(chunk.encode())
    fits, too_many = limit // per, limit // per + 1
    loop = "{% for i in (1..N) %}{{ c }}{% endfor %}"
    out = render(subject=None, html=None, text=loop.replace("N", str(fits)), data={"c": chunk})
    assert out.text is not None and len(out.text.encode()) == fits * per
    with pytest.raises(RenderError, match="limit"):
        render(subject=None, html=None, text=loop.replace("N", str(too_many)), data={"c": chunk})
    captured = "{% capture a %}" + loop.replace("N", str(too_many)) + "{% endcapture %}{{ a }}"
    with pytest.raises(RenderError, match="limit"):
        render(subject=None, html=None, text=captured, data={"c": chunk})
