"""Messaging's pure rules: tokens, link tracking, consent, pacing, targets, footer."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.messaging.domain.consent import suppression_reason
from services.messaging.domain.links import track_links
from services.messaging.domain.pacing import TokenBucket, backoff_delay
from services.messaging.domain.render import Rendered, with_unsubscribe_footer
from services.messaging.domain.targets import is_public_address
from services.messaging.domain.tokens import sign_token, verify_token
from services.messaging.providers import webhook
from services.messaging.secrets import SecretBox, hint

KEY = b"k" * 32


def test_tokens_round_trip_and_reject_tampering() -> None:
    token = sign_token(KEY, {"k": "c", "m": "m1", "u": "https://shop.example/a"})
    assert verify_token(KEY, token, kind="c") == {"k": "c", "m": "m1",
                                                  "u": "https://shop.example/a"}
    assert verify_token(KEY, token, kind="u") is None  # a click token is no unsubscribe token
    assert verify_token(b"x" * 32, token, kind="c") is None
    body, sig = token.split(".")
    forged = sign_token(KEY, {"k": "c", "m": "m1", "u": "https://evil.example"}).split(".")[0]
    assert verify_token(KEY, f"{forged}.{sig}", kind="c") is None
    assert verify_token(KEY, "garbage", kind="c") is None
    assert verify_token(KEY, f"{body}.!!!", kind="c") is None


def test_links_are_tracked_except_kept_ones_and_pixel_goes_before_body_end() -> None:
    html = ('<body><a href="https://a.example/x?y=1&amp;z=2">a</a> <a href=\'http://b.example\'>'
            'b</a> <a href="mailto:x@y.z">m</a> <a href="https://u.example/u">u</a></body>')
    out = track_links(html, click_url=lambda u: f"C[{u}]", open_url="O",
                      keep=lambda u: u.startswith("https://u.example"))
    assert 'href="C[https://a.example/x?y=1&z=2]"' in out
    assert "href='C[http://b.example]'" in out
    assert 'href="mailto:x@y.z"' in out and 'href="https://u.example/u"' in out
    assert out.endswith('<img src="O" width="1" height="1" alt="" style="display:none"></body>')


@pytest.mark.parametrize(("stored", "snapshot", "category", "topic", "dead", "expected"), [
    ({}, {}, "marketing", None, False, None),
    ({"email": False}, {"email": True}, "marketing", None, False, "unsubscribed from email"),
    ({"email": True}, {"email": False}, "marketing", None, False, "unsubscribed from email"),
    ({}, {"topic:deals": False}, "marketing", "deals", False, "topic:deals"),
    ({}, {"topic:deals": False}, "marketing", None, False, None),
    ({"email": False}, {}, "transactional", None, False, None),
    ({}, {}, "transactional", None, True, "undeliverable"),
    ({"erased": False}, {}, "transactional", None, False, "erased"),
])
def test_suppression(stored: dict[str, bool], snapshot: dict[str, bool], category: str,
                     topic: str | None, dead: bool, expected: str | None) -> None:
    reason = suppression_reason(channel="email", category=category, topic=topic, stored=stored,
                                snapshot=snapshot, undeliverable=dead)
    assert (reason is None) if expected is None else (expected in (reason or ""))


def test_backoff_grows_is_jittered_capped_and_honours_retry_after() -> None:
    top = lambda a, b: b  # noqa: E731  the upper end of the jitter range
    assert [backoff_delay(a, base=0.1, rand=top) for a in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff_delay(20, base=0.1, cap=5, rand=top) == 5
    assert backoff_delay(1, base=0.1, retry_after=3, rand=top) == 3
    assert backoff_delay(1, base=0.1, retry_after=99, cap=10, rand=top) == 10
    assert 0 <= backoff_delay(3) <= 1.6


def test_token_bucket_paces_after_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(10, burst=2, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    now[0] = 1.0
    assert bucket.reserve() == 0.0


@pytest.mark.parametrize(("ip", "public"), [
    ("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False),
    ("169.254.169.254", False), ("::1", False), ("::ffff:127.0.0.1", False),
    ("fd00::1", False), ("0.0.0.0", False), ("2606:4700:4700::1111", True), ("nonsense", False),
])
def test_public_addresses(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


def test_footer_added_unless_the_template_placed_the_link() -> None:
    out = with_unsubscribe_footer(Rendered("s", "<body><p>x</p></body>", "x"),
                                  url="https://t/u/1?a&b", sources=("<p>x</p>", "x"))
    assert out.html == ('<body><p>x</p><p style="font-size:12px;color:#888">'
                        '<a href="https://t/u/1?a&amp;b">Unsubscribe</a></p></body>')
    assert out.text is not None and out.text.endswith("Unsubscribe: https://t/u/1?a&b\n")
    placed = Rendered("s", None, "bye https://t/u/1")
    assert with_unsubscribe_footer(placed, url="https://t/u/1",
                                   sources=(None, "bye {{ unsubscribe_url }}")) == placed


def test_credentials_are_sealed_and_hinted() -> None:
    box = SecretBox("a secret that is long enough for the test")
    sealed = box.seal({"auth_token": "abcdef123456"})
    assert b"abcdef" not in sealed and box.open(sealed) == {"auth_token": "abcdef123456"}
    with pytest.raises(ValueError, match="TOUCHPOINT_SECRET"):
        SecretBox("another secret").open(sealed)
    assert hint("abcdef123456") == "****3456" and hint("short") == "****"


@pytest.mark.parametrize("secret", ["nope!!!!!", "whsec_nope!!", "whsec_YWJj",
                                    "MDEyMzQ1Njc4OWFiY2RlZg=="])
def test_webhook_signing_secrets_are_checked(secret: str) -> None:
    with pytest.raises(ValidationError, match="whsec_"):
        webhook.Secrets(signing_secret=secret)
    assert webhook.Secrets(signing_secret="whsec_MDEyMzQ1Njc4OWFiY2RlZg==")


def test_waves_keep_each_customer_in_one_wave_in_order() -> None:
    from datetime import UTC, datetime

    from services.messaging.handlers import _waves
    from services.messaging.message import Prepared
    from shared.contracts.send import Channel, Recipient, SendCommand

    def prepared(profile: str, n: int) -> Prepared:
        cmd = SendCommand(id=f"{profile}-{n}", workspace_id="w", profile_id=profile,
                          idempotency_key=f"idem-key-{profile}-{n}", channel=Channel.email,
                          template="t", to=Recipient(), requested_at=datetime.now(UTC))
        return Prepared(cmd, f"{profile}-{n}")

    items = [prepared(p, n) for n in range(3) for p in ("a", "b", "c")]
    waves = _waves(items, size=4)
    assert [[p.message_id for p in w] for w in waves] == [
        ["a-0", "a-1", "a-2"], ["b-0", "b-1", "b-2"], ["c-0", "c-1", "c-2"]]
    assert [len(w) for w in _waves(items, size=6)] == [6, 3]


@pytest.mark.parametrize("limit", [1, 2, 64])
def test_per_customer_bounds_concurrency_and_keeps_each_customer_in_order(limit: int) -> None:
    import asyncio

    from services.messaging.ledger import per_customer as _per_customer

    sizes = {"a": 3, "b": 1, "c": 2, "d": 1, "e": 3}
    groups = [[f"{c}{n}" for n in range(size)] for c, size in sizes.items()]
    busy: set[str] = set()
    log: list[str] = []
    most = 0

    async def call(item: str) -> str:
        nonlocal most
        assert item[0] not in busy  # one customer never on two workers at once
        busy.add(item[0])
        most = max(most, len(busy))
        await asyncio.sleep(0.001 * (ord(item[0]) % 3))
        log.append(item)
        busy.discard(item[0])
        return item.upper()

    results = asyncio.run(_per_customer(groups, limit, call))
    assert results == [item.upper() for g in groups for item in g]  # the groups' order
    assert most == min(limit, len(groups))
    for group in groups:
        assert [i for i in log if i[0] == group[0][0]] == group
    assert asyncio.run(_per_customer([], limit, call)) == []


def test_email_mime_parts_encoding_and_no_header_injection() -> None:
    from email import message_from_bytes, policy

    from services.messaging.providers.email import build_email

    raw = build_email(sender="Shöp <shop@x.io>", to="ada@example.com", message_id="m-1",
                      rendered=Rendered("Grüße\r\nBcc: evil@x.io", "<p>é</p>", "plain é"),
                      headers={"List-Unsubscribe": "<https://t/u/" + "a" * 200 + ">"})
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Bcc"] is None and mail["Subject"] == "Grüße Bcc: evil@x.io"
    assert mail["From"] == "Shöp <shop@x.io>" and mail["X-Touchpoint-Message"] == "m-1"
    assert mail["List-Unsubscribe"].strip() == "<https://t/u/" + "a" * 200 + ">"
    assert mail.get_body(("html",)).get_content().strip() == "<p>é</p>"
    assert mail.get_body(("plain",)).get_content().strip() == "plain é"
    text_only = message_from_bytes(build_email(sender="a@x.io", to="b@x.io", message_id="m",
                                               rendered=Rendered("s", None, "t")),
                                   policy=policy.default)
    assert text_only.get_content_type() == "text/plain" and text_only.get_content() == "t"


def test_email_bodies_are_7bit_or_quoted_printable_never_base64() -> None:
    from email import message_from_bytes, policy

    from services.messaging.providers.email import build_email

    def sent(html: str | None, text: str) -> tuple[bytes, Any]:
        raw = build_email(sender="a@x.io", to="b@x.io", message_id="m",
                          rendered=Rendered("s", html, text))
        return raw, message_from_bytes(raw, policy=policy.default)

    def body(mail: Any, kind: str) -> str:
        return str(mail.get_body((kind,)).get_content()).replace("\r\n", "\n").rstrip("\n")

    raw, mail = sent('<p class="a">hi</p>\n<p>.dot</p>', "line 1\nline 2\r\n")
    assert b"base64" not in raw and raw.count(b"Content-Transfer-Encoding: 7bit") == 2
    assert body(mail, "html") == '<p class="a">hi</p>\n<p>.dot</p>'
    assert body(mail, "plain") == "line 1\nline 2"
    # Non-ASCII, a line past 998 octets, a bare CR: quoted-printable, content intact.
    long_line, text = "x" * 1200, "Grüße\rzwei  "
    raw, mail = sent(long_line, text)
    assert raw.count(b"Content-Transfer-Encoding: quoted-printable") == 2
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert body(mail, "html") == long_line
    assert body(mail, "plain") == "Grüße\nzwei  "
