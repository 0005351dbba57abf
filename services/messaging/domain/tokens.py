"""Signed tokens for tracking links and unsubscribe URLs (HMAC-SHA256, no database lookup).

A token carries what the endpoint needs (workspace, profile, message, channel and, for a
click, the target URL), so the click redirect can only go where the message linked: a
changed URL breaks the signature (no open redirect).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson

_SIG_BYTES = 16  # 128-bit truncated HMAC: short URLs, still unforgeable


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _keyed(key: bytes) -> Any:
    # The HMAC with the key already mixed in; each token copies it (a message signs
    # about six: unsubscribe, open pixel, one per link), saving the key setup.
    return hmac.new(key, digestmod=hashlib.sha256)


def sign_token(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    mac = _keyed(key).copy()
    mac.update(body.encode())
    return f"{body}.{_b64(mac.digest()[:_SIG_BYTES])}"


def verify_token(keys: bytes | Sequence[bytes], token: str, *,
                 kind: str) -> dict[str, Any] | None:
    """The payload when the signature holds under one of `keys` (the current key, then the
    ones before a rotation) and the token is of `kind`, else None."""
    body, _, sig = token.partition(".")
    if not body or not sig or len(token) > 8192:
        return None
    candidates = [keys] if isinstance(keys, bytes) else keys
    try:
        given = _unb64(sig)
        # Every key is tried (no early exit): the time taken does not say which one matched.
        matched = [hmac.compare_digest(
            hmac.new(key, body.encode(), hashlib.sha256).digest()[:_SIG_BYTES], given)
            for key in candidates]
        if not any(matched):
            return None
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("k") != kind:
        return None
    return payload
