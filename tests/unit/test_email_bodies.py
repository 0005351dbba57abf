"""Email bodies: the text part made from HTML, and which links are tracked (pure)."""

import pytest

from services.messaging.domain.links import track_links
from services.messaging.domain.plain_text import html_to_text
from services.messaging.domain.render import Rendered
from services.messaging.providers.email import ascii_domain, build_email


def test_only_anchor_links_are_tracked() -> None:
    html = ('<html><head><link rel="stylesheet" href="https://cdn.example/s.css">'
            '<base href="https://shop.example/"></head><body>'
            '<a class="b" href="https://shop.example/sale">Sale</a>'
            "<A HREF='https://shop.example/new'>New</A>"
            '<img src="https://cdn.example/logo.png"><abbr title="x" href="https://no.example">'
            '<map><area href="https://map.example/x"></map></body></html>')
    out = track_links(html, click_url=lambda u: f"C[{u}]", open_url="O")
    assert 'href="C[https://shop.example/sale]"' in out
    assert "HREF='C[https://shop.example/new]'" in out
    assert '<link rel="stylesheet" href="https://cdn.example/s.css">' in out
    assert '<base href="https://shop.example/">' in out
    assert 'href="https://no.example"' in out and 'href="https://map.example/x"' in out
    assert 'src="https://cdn.example/logo.png"' in out


@pytest.mark.parametrize(("html", "text"), [
    ("<p>Hi Ada,</p><p>See <a href='https://x.io/s?a=1&amp;b=2'>the sale</a> &amp; more."
     "<br>Thanks</p>", "Hi Ada,\n\nSee the sale (https://x.io/s?a=1&b=2) & more.\nThanks\n"),
    ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
     "<h1>Title</h1><ul><li>One</li><li>Two</li></ul><script>x()</script></body></html>",
     "Title\n\n- One\n- Two\n"),
    ("<a href='https://x.io'>https://x.io</a> <a href='mailto:a@b.io'>mail us</a>",
     "https://x.io mail us\n"),
    ("<table><tr><td>Mug</td><td>$5.00</td></tr><tr><td>Tea</td><td>$3.00</td></tr></table>",
     "Mug $5.00\n\nTea $3.00\n"),
    ("Grüße   &eacute; <b>bold</b>\n\n\n\n<i>x</i>", "Grüße é bold\n\nx\n"),
])
def test_text_part_from_html(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_display_names_and_idna_domains() -> None:
    assert ascii_domain("zoe@bücher.de") == "zoe@xn--bcher-kva.de"
    assert ascii_domain("zoë@x.io") == "zoë@x.io"
    raw = build_email(sender="Shop <s@x.io>", to="Zoë <zoe@x.io>", message_id="m-1",
                      rendered=Rendered("Hi", None, "t"))
    assert b"To: =?utf-8?q?Zo=C3=AB?= <zoe@x.io>\r\n" in raw
    raw = build_email(sender="s@x.io", to="Zoë <zoë@x.io>", message_id="m-1",
                      rendered=Rendered("Hi", None, "t"), utf8=True)
    assert "To: =?utf-8?q?Zo=C3=AB?= <zoë@x.io>\r\n".encode() in raw
