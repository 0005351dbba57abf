"""Undeliverable addresses, by hash (see domain/addresses.py)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.domain.addresses import address_hash
from services.messaging.store.connection import Driver, driver
from services.messaging.tables import undeliverable
from shared.db.inbox import claim_cte


async def mark_undeliverable(conn: AsyncConnection | Driver, *, workspace_id: str, channel: str,
                             addresses: Iterable[str], reason: str) -> None:
    hashes = [address_hash(channel, a) for a in dict.fromkeys(addresses)]
    if hashes:
        await (await driver(conn)).execute(
            f"INSERT INTO {undeliverable.fullname} (workspace_id, channel, address_hash, reason) "
            "SELECT $1, $2, h, $3 FROM unnest($4::text[]) AS h ON CONFLICT DO NOTHING",
            workspace_id, channel, reason[:300], hashes)


async def mark_deliverable_many(conn: AsyncConnection | Driver,
                                targets: Iterable[tuple[str, str, str]]) -> None:
    """Clear (workspace, channel, address) triples in one statement: a batch of profile
    changes marks each new customer's address deliverable, one DELETE per record was a
    round trip and a SQLAlchemy compile each."""
    rows = list(dict.fromkeys((w, c, address_hash(c, a)) for w, c, a in targets))
    if rows:
        await (await driver(conn)).execute(
            f"DELETE FROM {undeliverable.fullname} AS u USING unnest($1::text[], $2::text[], "
            "$3::text[]) AS d(w, c, h) "
            "WHERE u.workspace_id = d.w AND u.channel = d.c AND u.address_hash = d.h",
            *map(list, zip(*rows, strict=True)))


def claim_and_mark_deliverable_sql(inbox: Table) -> str:
    """The inbox claim ($1 the consumer, $2 the message ids: shared/db/inbox.py's) and the
    DELETE of the undeliverable entries of the (message id $3, workspace $4, channel $5,
    address hash $6) rows whose message was claimed just now, as one statement: atomic on
    its own, so a batch holding nothing else needs no transaction around it."""
    return (f"WITH {claim_cte(inbox)} "
            f"DELETE FROM {undeliverable.fullname} AS u USING unnest($3::text[], $4::text[], "
            "$5::text[], $6::text[]) AS d(id, w, c, h) JOIN claimed ON claimed.message_id = d.id "
            "WHERE u.workspace_id = d.w AND u.channel = d.c AND u.address_hash = d.h")


async def claim_and_mark_deliverable(db: Driver, inbox: Table, consumer: str, ids: list[str],
                                     targets: list[tuple[str, str, str, str]]) -> None:
    """`claim_and_mark_deliverable_sql` for (message id, workspace, channel, address)."""
    rows = list(dict.fromkeys((i, w, c, address_hash(c, a)) for i, w, c, a in targets))
    await db.execute(claim_and_mark_deliverable_sql(inbox), consumer,
                     list(dict.fromkeys(ids)), *(map(list, zip(*rows, strict=True))
                                                 if rows else ([], [], [], [])))
