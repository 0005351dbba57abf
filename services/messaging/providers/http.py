"""HTTP for providers: outcome classification, and targets pinned through the guard."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

from services.messaging.providers.base import (
    OutcomeUnknown,
    PermanentFailure,
    TransientFailure,
)
from services.messaging.providers.guard import allowed_addresses


async def pinned_target(url: str, *, allow_private: bool) -> tuple[str, dict[str, str],
                                                                    dict[str, str]]:
    """Resolve the host once and connect to that address, so a DNS answer that changes
    between check and connect (rebinding) cannot reach a private network. Returns the URL to
    call, the Host header and the httpx extensions (TLS SNI keeps the real host name)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentFailure("target must be an http(s) URL")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    _family, ip = (await allowed_addresses(host, port, allow_private=allow_private))[0]
    netloc = (f"[{ip}]" if ":" in ip else ip) + (f":{parts.port}" if parts.port else "")
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return pinned, {"Host": host_header}, {"sni_hostname": host}


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def raise_for_outcome(response: httpx.Response, what: str) -> None:
    """429 and 5xx may succeed later; other 4xx never will."""
    code = response.status_code
    if code < 300:
        return
    if code == 429 or code >= 500:
        raise TransientFailure(f"{what}: HTTP {code}", retry_after=retry_after_seconds(response))
    raise PermanentFailure(f"{what}: HTTP {code} {_short(response)}".rstrip())


def _short(response: httpx.Response) -> str:
    return response.text[:200].replace("\n", " ") if response.text else ""


async def post(client: httpx.AsyncClient, url: str, what: str, **kwargs: object) -> httpx.Response:
    """POST and translate transport errors: no connection means surely not sent (retry);
    a timeout or drop after the request went out may mean it was accepted (no retry)."""
    try:
        return await client.post(url, **kwargs)  # type: ignore[arg-type]
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientFailure(f"{what}: cannot connect ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise OutcomeUnknown(f"outcome unknown: {what}: {type(exc).__name__}; not retried to "
                             "avoid a duplicate") from exc
