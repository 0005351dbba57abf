"""Open pixel and click tracking for rendered HTML."""

from __future__ import annotations

import re
from collections.abc import Callable

# Only links a reader clicks: the href of an <a> tag, http(s) in double or single quotes.
# <link> (stylesheets), <base>, <area>, images and other schemes (mailto:, tel:) stay as is.
_A_TAG = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE)


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
