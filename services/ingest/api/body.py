"""Read a tracking request: gzip, size limits, JSON, write key (Basic or `writeKey`)."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from shared.auth import KeyRing, Principal
from shared.http.problems import Problem

MAX_EVENT_BYTES = 32 * 1024  # Segment's limits
MAX_BATCH_BYTES = 500 * 1024
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="touchpoint"'}


def parse_json(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The body as a JSON object (gunzipped if sent so); 400/413 problems otherwise."""
    if headers.get("content-encoding", "").lower() == "gzip":
        raw = _gunzip(raw)
    if len(raw) > MAX_BATCH_BYTES:
        raise Problem(413, "Payload too large", f"request body exceeds {MAX_BATCH_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", f"body is not valid JSON: {exc.msg} at {exc.pos}",
                      errors=[{"field": "body", "message": "invalid JSON"}]) from exc
    if not isinstance(body, dict):
        raise Problem(400, "Invalid request", "body must be a JSON object",
                      errors=[{"field": "body", "message": "expected an object"}])
    return body


def _gunzip(raw: bytes) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(raw, MAX_BATCH_BYTES + 1)  # bounded: no gzip bombs
    except zlib.error as exc:
        raise Problem(400, "Malformed body",
                      "Content-Encoding is gzip but the body is not") from exc
    if len(out) > MAX_BATCH_BYTES or decompressor.unconsumed_tail:
        raise Problem(413, "Payload too large",
                      f"decompressed body exceeds {MAX_BATCH_BYTES} bytes")
    return out


def write_key_of(headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, _, _password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    key = body.get("writeKey")
    return key if isinstance(key, str) and key else None


async def authenticate(keyring: KeyRing, headers: Mapping[str, str],
                       body: dict[str, Any]) -> Principal:
    key = write_key_of(headers, body)
    if key is None:
        raise Problem(401, "Unauthorized",
                      "send the write key as HTTP Basic user name or as `writeKey` in the body",
                      headers=_CHALLENGE)
    principal = await keyring.lookup(key, "write")
    if principal is None:
        raise Problem(401, "Unauthorized", "unknown or revoked write key", headers=_CHALLENGE)
    return principal


class TooDeep(ValueError):
    """Nested deeper than the JSON encoder (and any sane event) goes."""


def encoded(item: Any) -> bytes:
    """The call as JSON; raises TooDeep past orjson's ~250 levels of nesting."""
    try:
        return orjson.dumps(item)
    except TypeError as exc:  # orjson's JSONEncodeError: "Recursion limit reached"
        raise TooDeep("nested too deeply") from exc
