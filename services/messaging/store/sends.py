"""The send path's statements on the message log, one per batch over unnest() arrays, on
asyncpg (see store/connection.py): the claim, `sending` marks, outcomes, test sends and
the retry sweeper's leases. Functions take the caller's transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.messaging.store.connection import Driver
from services.messaging.tables import messages, outbox
from shared.db.outbox import Columns, OutboxRow, insert_sql

_T = messages.fullname
_CLAIM = (f"INSERT INTO {_T} (id, workspace_id, idempotency_key, profile_id, "
          "channel, template, status, recipient, journey, journey_key, template_version) "
          "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
          "$6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::int[]) "
          "ON CONFLICT DO NOTHING RETURNING id")
# A redelivered command's row, still unfinished.
_LEFTOVER = (f"SELECT id, workspace_id, idempotency_key, status FROM {_T} "
             "WHERE (workspace_id, idempotency_key) IN "
             "(SELECT * FROM unnest($1::text[], $2::text[])) "
             "AND status IN ('queued', 'sending') FOR UPDATE")
_UNKNOWN = (f"UPDATE {_T} AS m SET status = 'unknown', error = $3, "
            "command = u.command, updated_at = now() "
            "FROM unnest($1::text[], $2::jsonb[]) AS u(id, command) WHERE m.id = u.id")
# $2 stamps the mark and tells a retry of the same flush its own marks apart: a COMMIT whose
# answer an outage cut off may have committed, and the retry must not read those messages
# as taken by another worker (they would stay `sending`, never sent).
_MARK_AT = (f"UPDATE {_T} SET status = 'sending', updated_at = ${{stamp}} "
            "WHERE id = ANY(${ids}::text[]) AND (status IN ('queued', 'retrying') "
            "OR (status = 'sending' AND updated_at = ${stamp})) RETURNING id")
_MARK = _MARK_AT.format(ids=1, stamp=2)
_RECORD = (f"UPDATE {_T} AS m SET status = o.status, error = o.error, "
           "updated_at = now(), attempts = m.attempts + 1, provider = o.provider, "
           "provider_message_id = o.provider_id, sent_at = o.sent_at, content = o.content, "
           "subject = o.subject, body = o.body, retry_at = o.retry_at, "
           "retry_since = o.retry_since, command = o.command "
           "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
           "$6::timestamptz[], $7::jsonb[], $8::text[], $9::text[], $10::timestamptz[], "
           "$11::timestamptz[], $12::jsonb[]) "
           "AS o(id, status, error, provider, provider_id, sent_at, content, subject, body, "
           "retry_at, retry_since, command) "
           "WHERE m.id = o.id")
OUTCOME_COLUMNS = 12  # the columns `record_outcomes` takes, in _RECORD's order
# The claim and its `queued` delivery events in one statement (so, outside a transaction,
# without BEGIN and COMMIT): only the events of the rows inserted go into the outbox.
_CLAIM_QUEUED = (f"WITH claimed AS ({_CLAIM}), "
                 f"queued AS ({insert_sql(outbox.fullname, 12, only_of='claimed')}) "
                 "SELECT id AS message, NULL::bigint AS outbox_id FROM claimed "
                 "UNION ALL SELECT NULL, id FROM queued")
# A ledger flush in one statement: outcomes, their delivery events and the next marks
# (never the same message: a message's outcome comes only after its mark was durable).
_RECORD_AND_MARK = (f"WITH recorded AS ({_RECORD}), "
                    f"queued AS ({insert_sql(outbox.fullname, 13)}), "
                    f"marked AS ({_MARK_AT.format(ids=17, stamp=18)}) "
                    "SELECT id AS message, NULL::bigint AS outbox_id FROM marked "
                    "UNION ALL SELECT NULL, id FROM queued")
_TEST = (f"INSERT INTO {_T} (id, workspace_id, idempotency_key, profile_id, "
         "channel, template, template_version, status, recipient) "
         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
# A test send without a customer, once answered: the log line without what names anyone.
_FORGET_TEST = (f"UPDATE {_T} SET recipient = NULL, subject = NULL, body = NULL, "
                "content = NULL, command = NULL, erased_at = now(), "
                "error = regexp_replace(error, $3, '[erased]', 'gi') "
                "WHERE workspace_id = $1 AND id = $2")
_STALE = (f"UPDATE {_T} SET status = 'unknown', error = $2, "
          "updated_at = now(), retry_at = NULL WHERE id IN ("
          f"SELECT id FROM {_T} WHERE status = 'sending' "
          "AND command IS NOT NULL AND retry_at < now() "
          "LIMIT $1 FOR UPDATE SKIP LOCKED) "
          "RETURNING id, workspace_id, profile_id, idempotency_key, channel, template, journey")
_DUE = (f"UPDATE {_T} SET retry_at = now() + make_interval(secs => $2) "
        "WHERE id IN ("
        f"SELECT id FROM {_T} WHERE status = 'retrying' AND retry_at <= now() "
        "ORDER BY retry_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "RETURNING id, attempts, retry_since, command")
_UNUSABLE = (f"UPDATE {_T} SET status = 'failed', retry_at = NULL, "
             "error = 'retry: the kept send command no longer validates', updated_at = now() "
             "WHERE id = ANY($1::text[]) AND status = 'retrying'")


async def claim_queued(db: Driver, columns: Sequence[Sequence[Any]], events: Columns
                       ) -> tuple[set[str], list[OutboxRow]]:
    """Insert message rows `queued` (id, workspace, idempotency key, profile, channel,
    template, status, recipient, journey JSON, journey key, template version: one list
    each; a row whose idempotency key is taken is skipped) and the `queued` delivery events
    of those inserted (`events`, one per row, in their order), as one statement. Returns
    the ids inserted and the outbox rows written."""
    got = await db.fetch(_CLAIM_QUEUED, *columns, *events, list(columns[0]))
    fresh = {r[0] for r in got if r[0] is not None}
    keep = [n for n, message_id in enumerate(columns[0]) if message_id in fresh]
    return fresh, events.written([r[1] for r in got if r[1] is not None], keep)


async def record_and_mark(db: Driver, columns: Sequence[Sequence[Any]], events: Columns,
                          ids: Sequence[str], stamp: datetime
                          ) -> tuple[set[str], list[OutboxRow]]:
    """`record_outcomes`, their delivery events and `mark_sending`, as one statement.
    Returns what `mark_sending` does and the outbox rows written."""
    got = await db.fetch(_RECORD_AND_MARK, *columns, *events, list(ids), stamp)
    return ({r[0] for r in got if r[0] is not None},
            events.written([r[1] for r in got if r[1] is not None]))


async def unfinished(db: Driver, keys: Sequence[tuple[str, str]]) -> list[Any]:
    """The rows of these (workspace, idempotency key) still `queued` or `sending`, locked."""
    return list(await db.fetch(_LEFTOVER, [w for w, _ in keys], [k for _, k in keys]))


async def mark_unknown(db: Driver, ids: Sequence[str], commands: Sequence[str],
                       reason: str) -> None:
    """Rows a crash left `sending` become `unknown`, keeping their command (JSON)."""
    await db.execute(_UNKNOWN, list(ids), list(commands), reason)


async def mark_sending(db: Driver, ids: Sequence[str], stamp: datetime) -> set[str]:
    """`queued|retrying -> sending`, stamped `stamp`; returns the ids this call marked, and
    those an earlier call with the same `stamp` marked (a retried flush)."""
    return {r[0] for r in await db.fetch(_MARK, list(ids), stamp)} if ids else set()


async def record_outcomes(db: Driver, columns: Sequence[Sequence[Any]]) -> None:
    """Outcomes, one list per column of _RECORD (OUTCOME_COLUMNS of them)."""
    await db.execute(_RECORD, *columns)


async def insert_test_message(db: Driver, *values: Any) -> None:
    """A test send's row (id, workspace, idempotency key, profile, channel, template,
    template version, status, recipient)."""
    await db.execute(_TEST, *values)


async def forget_test_address(db: Driver, workspace_id: str, message_id: str,
                              address: str) -> None:
    """Keep a test send's log line (status, template, provider id: delivery webhooks still
    find it) without its address, content or command; a provider error quoting the address
    reads `[erased]`. A bounce reported later then marks no address undeliverable."""
    await db.execute(_FORGET_TEST, workspace_id, message_id, re.escape(address))


async def stale_to_unknown(db: Driver, limit: int, reason: str) -> list[Any]:
    """Messages the sweeper marked `sending` whose lease ran out become `unknown`."""
    return list(await db.fetch(_STALE, limit, reason))


async def lease_due(db: Driver, limit: int, lease_s: float) -> list[Any]:
    """Due `retrying` messages, their `retry_at` moved to the lease's end (SKIP LOCKED)."""
    return list(await db.fetch(_DUE, limit, lease_s))


async def fail_unusable(db: Driver, ids: Sequence[str]) -> None:
    """`retrying` messages whose kept command no longer validates fail, with the reason."""
    await db.execute(_UNUSABLE, list(ids))
