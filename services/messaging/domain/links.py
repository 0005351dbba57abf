"""Open pixel and click tracking for rendered HTML."""

from __future__ import annotations

import re
from collections.abc import Callable

# href="http(s)://..." in double or single quotes; other schemes (mailto:, tel:) stay as is.
_HREF = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.IGNORECASE)


def track_links(html: str, *, click_url: Callable[[str], str], open_url: str,
                keep: Callable[[str], bool] = lambda _u: False) -> str:
    """Rewrite http(s) links through `click_url` (except those `keep` says) and add the pixel."""

    def swap(match: re.Match[str]) -> str:
        url = _unescape(match.group(3))
        if keep(url):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{click_url(url)}{match.group(2)}"

    pixel = f'<img src="{open_url}" width="1" height="1" alt="" style="display:none">'
    rewritten = _HREF.sub(swap, html)
    closing = rewritten.lower().rfind("</body>")
    if closing == -1:
        return rewritten + pixel
    return rewritten[:closing] + pixel + rewritten[closing:]


def _unescape(url: str) -> str:
    return url.replace("&amp;", "&")
