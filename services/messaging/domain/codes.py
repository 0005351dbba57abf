"""Discount codes: generated with a prefix, or uploaded (duplicates reported). Pure."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable

# No 0/O, 1/I/L: codes are read off screens and typed in.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def generate_codes(prefix: str, count: int, *, length: int = 8,
                   taken: Iterable[str] = ()) -> list[str]:
    """`count` new random codes `<prefix><length random characters>`, none in `taken`."""
    seen = set(taken)
    out: list[str] = []
    while len(out) < count:
        candidate = prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def split_upload(codes: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the distinct codes in upload order, the codes given more than once)."""
    counted = Counter(c.strip() for c in codes)
    counted.pop("", None)
    return list(counted), sorted(c for c, n in counted.items() if n > 1)
