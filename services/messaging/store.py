"""Messaging's database operations. Functions take a connection; callers own transactions."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import orjson
from sqlalchemy import and_, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.messaging.tables import (
    consents,
    messages,
    outbox,
    profile_aliases,
    rate_buckets,
    templates,
    undeliverable,
)
from services.messaging.template_store import load_snippets
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.envelope import message_key
from shared.db.driver import driver as sqlalchemy_driver
from shared.db.outbox import OutboxRow, written_rows
from shared.kafka.codec import encode, headers_for, with_trace
from shared.settings import Settings


def address_hash(channel: str, address: str) -> str:
    normal = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(normal.encode()).hexdigest()


# The send path's statements (claim, queued -> sending, outcomes, outbox) go to asyncpg
# directly, one statement per batch over unnest() arrays: SQLAlchemy's compiling, parameter
# and result handling cost several times what Postgres spends on them (about a sixth of
# the service's CPU per email). The rest of messaging stays on SQLAlchemy Core.
Driver: TypeAlias = "asyncpg.Connection[Any]"


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A transaction on one of the engine's pooled connections, driven by asyncpg itself.
    JSONB goes through the codec the engine installed: written as JSON text, read decoded."""
    async with engine.connect() as conn:
        db: Driver = await sqlalchemy_driver(conn)  # not in a SQLAlchemy transaction
        try:
            async with db.transaction():
                yield db
        except BaseException:
            if db.is_closed():  # don't hand a dead connection back to the pool
                await conn.invalidate()
            raise


async def driver(conn: AsyncConnection | Driver) -> Driver:
    """asyncpg itself, also inside a SQLAlchemy transaction (the API's paths)."""
    if not isinstance(conn, AsyncConnection):
        return conn
    return await sqlalchemy_driver(conn)


_OUTBOX = (f"INSERT INTO {outbox.fullname} (topic, key, value, headers) "
           "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[]) "
           "RETURNING id")


class Encoded(NamedTuple):
    """A delivery event as its outbox row holds it."""

    key: bytes
    value: bytes
    headers: str  # JSON [[name, value], ...]


def encoded(e: DeliveryEvent) -> Encoded:
    """The same row as `shared.db.add_to_outbox` writes."""
    return Encoded(message_key(e.workspace_id, e.profile_id), encode(e),
                   orjson.dumps([[k, v.decode()] for k, v in headers_for(e, "delivery-events")]
                                ).decode())


async def emit(conn: AsyncConnection | Driver, settings: Settings,
               events: Sequence[DeliveryEvent | Encoded]) -> list[OutboxRow]:
    """Delivery events into the outbox, in the caller's transaction, in order."""
    if not events:
        return []
    rows_ = [e if isinstance(e, Encoded) else encoded(e) for e in events]
    topics = [settings.topic("delivery-events")] * len(rows_)
    keys = [r.key for r in rows_]
    values = [r.value for r in rows_]
    headers = with_trace([r.headers for r in rows_])
    rows = await (await driver(conn)).fetch(_OUTBOX, topics, keys, values, headers)
    return written_rows([r[0] for r in rows], topics, keys, values, headers)


@dataclass
class SendState:
    """What send-time checks need, loaded for a whole batch in three queries."""

    templates: dict[tuple[str, str], Any] = field(default_factory=dict)
    consent: dict[tuple[str, str], dict[str, bool]] = field(default_factory=dict)
    dead: set[tuple[str, str, str]] = field(default_factory=set)  # ws, channel, address hash
    snippets: dict[str, dict[str, str]] = field(default_factory=dict)  # ws -> name -> source


_TEMPLATES = (f"SELECT * FROM {templates.fullname} WHERE (workspace_id, key) IN "
              "(SELECT * FROM unnest($1::text[], $2::text[]))")
_CONSENTS = (f"SELECT workspace_id, profile_id, scope, subscribed FROM {consents.fullname} "
             "WHERE (workspace_id, profile_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))")
_DEAD = (f"SELECT workspace_id, channel, address_hash FROM {undeliverable.fullname} "
         "WHERE (workspace_id, channel, address_hash) IN "
         "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))")


async def load_send_state(conn: AsyncConnection, *, template_keys: set[tuple[str, str]],
                          profiles: set[tuple[str, str]],
                          addresses: set[tuple[str, str, str]]) -> SendState:
    """On asyncpg (one statement per table over unnest arrays): SQLAlchemy's expanding IN
    cost about 20 µs of CPU per message of the batch."""
    state = SendState()
    db = await driver(conn)
    if template_keys:
        rows = await db.fetch(_TEMPLATES, *_columns(template_keys))
        state.templates = {(r["workspace_id"], r["key"]): r for r in rows}
        state.snippets = await load_snippets(conn, {w for w, _ in template_keys})
    if profiles:
        for r in await db.fetch(_CONSENTS, *_columns(profiles)):
            state.consent.setdefault((r[0], r[1]), {})[r[2]] = r[3]
    if addresses:
        state.dead = {(r[0], r[1], r[2])
                      for r in await db.fetch(_DEAD, *_columns(addresses))}
    return state


def _columns(rows: Iterable[tuple[str, ...]]) -> list[list[str]]:
    return [list(column) for column in zip(*rows, strict=True)]


_TAKE = (f"INSERT INTO {rate_buckets.fullname} AS b (workspace_id, channel, provider, tokens, "
         "stamp) VALUES ($1, $2, $3, $5 - 1, clock_timestamp()) "
         "ON CONFLICT (workspace_id, channel, provider) DO UPDATE SET "
         "tokens = LEAST($5, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.stamp) * $4)"
         " - 1, stamp = clock_timestamp() RETURNING tokens")


async def take_token(db: Driver, key: tuple[str, str, str], rate: float, burst: float) -> float:
    """Take one token of the shared bucket `key` (workspace, channel, provider); returns the
    seconds to wait before using it. The row lock orders concurrent takers, across
    replicas: the bucket may go into debt, each taker waiting for its own slot."""
    tokens = await db.fetchval(_TAKE, *key, rate, burst)
    return 0.0 if tokens >= 0 else float(-tokens / rate)


async def record_consent(conn: AsyncConnection, *, workspace_id: str, profile_id: str,
                         scope: str, subscribed: bool, source: str, at: datetime) -> None:
    """Upsert; an older change never overwrites a newer one (changes can arrive late). A
    profile already merged into another passes the change on to the survivor."""
    survivor = (await conn.execute(select(profile_aliases.c.merged_into).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.profile_id == profile_id))).scalar()
    rows = [{"workspace_id": workspace_id, "profile_id": p, "scope": scope[:120],
             "subscribed": subscribed, "source": source[:100], "changed_at": at}
            for p in filter(None, (profile_id, survivor))]
    stmt = insert(consents).values(rows)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at <= stmt.excluded.changed_at))


async def mark_undeliverable(conn: AsyncConnection | Driver, *, workspace_id: str, channel: str,
                             addresses: Iterable[str], reason: str) -> None:
    hashes = [address_hash(channel, a) for a in dict.fromkeys(addresses)]
    if hashes:
        await (await driver(conn)).execute(
            f"INSERT INTO {undeliverable.fullname} (workspace_id, channel, address_hash, reason) "
            "SELECT $1, $2, h, $3 FROM unnest($4::text[]) AS h ON CONFLICT DO NOTHING",
            workspace_id, channel, reason[:300], hashes)


async def mark_deliverable(conn: AsyncConnection, *, workspace_id: str, channel: str,
                           address: str) -> None:
    await conn.execute(undeliverable.delete().where(
        undeliverable.c.workspace_id == workspace_id, undeliverable.c.channel == channel,
        undeliverable.c.address_hash == address_hash(channel, address)))


async def merge_consents(conn: AsyncConnection, *, workspace_id: str, into: str,
                         merged: list[str]) -> None:
    """Unsubscribes recorded on merged profiles keep counting for the surviving one, also
    those that arrive later for a merged id (see `record_consent`)."""
    if not merged:
        return
    await conn.execute(insert(profile_aliases).values([
        {"workspace_id": workspace_id, "profile_id": m, "merged_into": into} for m in merged
    ]).on_conflict_do_update(index_elements=[profile_aliases.c.workspace_id,
                                             profile_aliases.c.profile_id],
                             set_={"merged_into": into}))
    await conn.execute(update(profile_aliases).where(  # a chain of merges ends at `into`
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.merged_into.in_(merged)).values(merged_into=into))
    source = select(consents.c.workspace_id, literal(into, consents.c.profile_id.type),
                    consents.c.scope, consents.c.subscribed, consents.c.source,
                    consents.c.changed_at).where(
        consents.c.workspace_id == workspace_id, consents.c.profile_id.in_(merged))
    stmt = insert(consents).from_select(
        ["workspace_id", "profile_id", "scope", "subscribed", "source", "changed_at"], source)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at < stmt.excluded.changed_at))


async def erase_profile(conn: AsyncConnection, *, workspace_id: str, profile_id: str) -> int:
    """Drop the personal data of a profile's messages; keep the log lines for statistics."""
    result = await conn.execute(update(messages).where(
        messages.c.workspace_id == workspace_id, messages.c.profile_id == profile_id,
        messages.c.erased_at.is_(None)).values(
        recipient=None, subject=None, body=None, content=None, command=None,
        erased_at=func.now()))
    return result.rowcount


def message_filter(workspace_id: str, *, profile_id: str | None, journey: str | None,
                   status: str | None, channel: str | None) -> Any:
    conditions = [messages.c.workspace_id == workspace_id]
    if profile_id:
        conditions.append(messages.c.profile_id == profile_id)
    if journey:
        conditions.append(messages.c.journey_key == journey)
    if status:
        conditions.append(messages.c.status == status)
    if channel:
        conditions.append(messages.c.channel == channel)
    return and_(*conditions)




def event_from_row(row: Any, status: DeliveryStatus, at: datetime, *, suffix: str = "",
                   **fields: Any) -> DeliveryEvent:
    """A delivery event about a logged message (tracking, unsubscribes, provider status)."""
    return DeliveryEvent(id=f"{row['id']}:{status.value}{suffix}",
                         workspace_id=row["workspace_id"], profile_id=row["profile_id"],
                         message_id=row["id"], idempotency_key=row["idempotency_key"],
                         status=status, channel=row["channel"], template=row["template"],
                         journey=row["journey"], occurred_at=at, **fields)


async def touch_message(conn: AsyncConnection, *, workspace_id: str, message_id: str,
                        column: str, status: str | None = None) -> tuple[Any, bool]:
    """Set `column` to now if unset (and the status, if given). Returns the row (None when
    unknown) and whether this was the first time."""
    values: dict[str, Any] = {column: func.coalesce(messages.c[column], func.now()),
                              "updated_at": func.now()}
    if status:
        values["status"] = status
    before = (await conn.execute(select(messages.c[column]).where(
        messages.c.workspace_id == workspace_id, messages.c.id == message_id)
        .with_for_update())).first()
    if before is None:
        return None, False
    row = (await conn.execute(update(messages).where(messages.c.id == message_id)
                              .values(**values).returning(messages))).mappings().one()
    return row, before[0] is None
