"""Ids of the changes profile publishes.

(The batch path never builds ProfileEvent / ProfileChange / ProfileSnapshot models: it writes
them with the contracts' fast writers (`shared.contracts.profile`), splicing in the
snapshot's JSON, and queues a batch's messages for every topic as one statement
(`shared.db.outbox.queue`).)
"""

from __future__ import annotations

import hashlib

MAX_ID = 200  # the envelope's limit on a message id


def change_id(*parts: str) -> str:
    """A change's message id from what makes it unique. Deterministic, so a redelivered event
    gives the same id (consumers dedupe on it); hashed past the envelope's limit, which a
    client's 200-character event id would otherwise push it over (nothing validates the
    JSON these rows are written as)."""
    raw = ":".join(parts)
    return raw if len(raw) <= MAX_ID else "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
