"""API keys: write keys (ingest) and admin keys (management APIs), stored hashed.

Keys are 32+ random bytes, so a plain SHA-256 is enough (no password stretching
needed: there is nothing to brute-force). Each service keeps its own copy of the
admin keys in its own schema and seeds the bootstrap keys at start-up.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import Settings


def api_keys_table(metadata: MetaData) -> Table:
    return Table(
        "api_keys",
        metadata,
        Column("key_hash", String(64), primary_key=True),
        Column("kind", String(10), nullable=False),  # "admin" | "write"
        Column("workspace_id", String(64), nullable=False),
        Column("name", String(200), nullable=False, server_default=""),
        Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
    )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: str) -> str:
    return f"tp_{kind}_{secrets.token_urlsafe(32)}"


async def seed_bootstrap_keys(
    engine: AsyncEngine, table: Table, settings: Settings, kinds: tuple[str, ...] = ("admin",)
) -> None:
    """Register TOUCHPOINT_BOOTSTRAP_*_KEY for the default workspace (idempotent)."""
    wanted = {"admin": settings.bootstrap_admin_key, "write": settings.bootstrap_write_key}
    rows = [
        {"key_hash": hash_key(key), "kind": kind, "workspace_id": settings.default_workspace,
         "name": "bootstrap"}
        for kind in kinds
        if (key := wanted.get(kind))
    ]
    if rows:
        async with engine.begin() as conn:
            await conn.execute(insert(table).values(rows).on_conflict_do_nothing())


@dataclass(frozen=True)
class Principal:
    workspace_id: str
    kind: str


class KeyRing:
    """Looks keys up with a short cache, so auth costs no query on the hot path.

    Unknown keys are remembered apart from known ones: a stream of wrong keys fills and
    clears only its own cache, never evicting the keys real clients use."""

    def __init__(self, engine: AsyncEngine, table: Table, ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.table = table
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._misses: dict[str, float] = {}

    async def lookup(self, key: str, kind: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        principal: Principal | None
        if hit and hit[0] > now:
            principal = hit[1]
        elif self._misses.get(digest, 0.0) > now:
            principal = None
        else:
            t = self.table
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(t.c.workspace_id, t.c.kind).where(
                            t.c.key_hash == digest, t.c.revoked_at.is_(None)
                        )
                    )
                ).first()
            principal = Principal(row.workspace_id, row.kind) if row else None
            if principal is None:
                if len(self._misses) > 10_000:
                    self._misses.clear()
                self._misses[digest] = now + self.ttl_s
            else:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self.ttl_s, principal)
        return principal if principal and principal.kind == kind else None

    def forget(self) -> None:
        self._cache.clear()
        self._misses.clear()
