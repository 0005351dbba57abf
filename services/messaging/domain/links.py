"""The links a message carries: signed unsubscribe, open and click URLs, and the rewrite of
rendered HTML that puts the click links and the open pixel in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from services.messaging.domain.tokens import sign_token

# Only links a reader clicks: the href of an <a> tag, http(s) in double or single quotes.
# <link> (stylesheets), <base>, <area>, images and other schemes (mailto:, tel:) stay as is.
_A_TAG = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE)


@dataclass(frozen=True)
class LinkSigner:
    """Signs the links of one process's messages (domain/tokens.py: no database lookup)."""

    token_key: bytes
    public_url: str  # where the tracking and unsubscribe endpoints are reached

    def _token(self, kind: str, workspace_id: str, profile_id: str, message_id: str,
               channel: str, **extra: str) -> str:
        return sign_token(self.token_key, {"k": kind, "w": workspace_id, "p": profile_id,
                                           "m": message_id, "c": channel, **extra})

    def unsubscribe_url(self, workspace_id: str, profile_id: str, message_id: str,
                        channel: str, topic: str | None) -> str:
        extra = {"t": topic} if topic else {}
        token = self._token("u", workspace_id, profile_id, message_id, channel, **extra)
        return f"{self.public_url}/u/{token}"

    def open_url(self, workspace_id: str, profile_id: str, message_id: str) -> str:
        token = self._token("o", workspace_id, profile_id, message_id, "email")
        return f"{self.public_url}/t/o/{token}.gif"

    def click_url(self, workspace_id: str, profile_id: str, message_id: str, url: str) -> str:
        token = self._token("c", workspace_id, profile_id, message_id, "email", u=url)
        return f"{self.public_url}/t/c/{token}"


def track_links(html: str, *, click_url: Callable[[str], str], open_url: str,
                keep: Callable[[str], bool] = lambda _u: False) -> str:
    """Rewrite the http(s) links of <a> tags through `click_url` (except those `keep`
    says) and add the pixel."""

    def swap(match: re.Match[str]) -> str:
        url = _unescape(match.group(3))
        if keep(url):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{click_url(url)}{match.group(2)}"

    pixel = f'<img src="{open_url}" width="1" height="1" alt="" style="display:none">'
    rewritten = _A_TAG.sub(lambda tag: _HREF.sub(swap, tag.group(0)), html)
    closing = rewritten.lower().rfind("</body>")
    if closing == -1:
        return rewritten + pixel
    return rewritten[:closing] + pixel + rewritten[closing:]


def _unescape(url: str) -> str:
    return url.replace("&amp;", "&")
