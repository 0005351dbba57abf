"""Stable hashes: idempotency keys and deterministic per-customer buckets."""

from __future__ import annotations

import hashlib


def idempotency_key(*parts: object) -> str:
    """Stable key for one send of one step of one stage entry: same inputs, same key."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:48]


def bucket(*parts: object) -> float:
    """A number in [0, 100) that depends only on `parts`: splits and holdout never reshuffle."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100
