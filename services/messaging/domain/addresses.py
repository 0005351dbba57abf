"""Addresses as the undeliverable list keys them: a hash, never the address itself."""

from __future__ import annotations

import hashlib


def address_hash(channel: str, address: str) -> str:
    normal = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(normal.encode()).hexdigest()
