"""Journey's message handlers: profile events move customers; sends go to the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from services.journey.domain.document import JourneyDocument
from services.journey.domain.engine import idempotency_key, matching_entries, run_from_start
from services.journey.tables import inbox, instances, journey_versions, journeys, outbox
from shared.contracts.envelope import JourneyRef, message_key
from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent
from shared.contracts.send import Recipient, SendCommand
from shared.db import add_to_outbox, claim_new
from shared.kafka import Record
from shared.runtime import ServiceRuntime


async def published_documents(conn: Any, workspaces: set[str]) -> dict[str, list[tuple[int,
                                                                                      JourneyDocument]]]:
    """The current published version of every live journey, per workspace."""
    rows = (await conn.execute(
        select(journey_versions.c.workspace_id, journey_versions.c.version,
               journey_versions.c.document)
        .join(journeys, (journeys.c.workspace_id == journey_versions.c.workspace_id)
              & (journeys.c.key == journey_versions.c.key)
              & (journeys.c.published_version == journey_versions.c.version))
        .where(journeys.c.status == "published", journeys.c.workspace_id.in_(workspaces))
    )).all()
    out: dict[str, list[tuple[int, JourneyDocument]]] = {}
    for row in rows:
        out.setdefault(row.workspace_id, []).append((row.version, _parsed(row)))
    return out


_PARSED: dict[tuple[str, str, int], JourneyDocument] = {}


def _parsed(row: Any) -> JourneyDocument:
    """Published versions never change, so each is validated once per process."""
    key = (row.workspace_id, row.document["key"], row.version)
    if key not in _PARSED:
        _PARSED[key] = JourneyDocument.model_validate(row.document)
    return _PARSED[key]


async def handle_profile_events(rt: ServiceRuntime, records: list[Record]) -> None:
    settings = rt.settings
    now = datetime.now(UTC)
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, "journey.profile-events",
                                [r.value.dedupe_id() for r in records])
        todo: list[ProfileEvent] = [r.value for r in records if r.value.dedupe_id() in fresh]
        docs = await published_documents(conn, {pe.workspace_id for pe in todo}) if todo else {}
        sends: list[tuple[bytes, SendCommand]] = []
        for pe in todo:
            data = {"event": pe.event.model_dump(mode="json"),
                    "profile": pe.profile.model_dump(mode="json")}
            for version, doc in docs.get(pe.workspace_id, []):
                for entry in matching_entries(doc, data):
                    progress = run_from_start(entry.stage)
                    entered = await conn.execute(
                        insert(instances).values(
                            workspace_id=pe.workspace_id, journey_key=doc.key, version=version,
                            profile_id=pe.profile_id, instance_key=entry.instance_key,
                            entry_id=pe.id, stage=entry.stage.key, step=progress.waiting_at,
                            status="active" if progress.waiting_at else "completed",
                            entered_at=now,
                        ).on_conflict_do_nothing().returning(instances.c.id))
                    if entered.scalar() is None:
                        continue  # this entry was already applied
                    for step_id, send in progress.sends:
                        key = idempotency_key(pe.workspace_id, doc.key, version, pe.profile_id,
                                              entry.instance_key, pe.id, entry.stage.key, step_id)
                        sends.append((message_key(pe.workspace_id, pe.profile_id), SendCommand(
                            id=key, workspace_id=pe.workspace_id, profile_id=pe.profile_id,
                            idempotency_key=key, channel=send.channel, template=send.template,
                            to=Recipient(email=pe.profile.email, phone=pe.profile.phone),
                            journey=JourneyRef(key=doc.key, version=version,
                                               stage=entry.stage.key, step=step_id,
                                               instance=entry.instance_key or None),
                            context=data, requested_at=now)))
        ids = await add_to_outbox(conn, outbox, settings.topic("send-commands"), "send-commands",
                                  sends)
    assert rt.relay is not None
    await rt.relay.publish(ids)


async def handle_profile_changes(rt: ServiceRuntime, records: list[Record]) -> None:
    """Merges re-key journey state; erasure drops it."""
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, "journey.profile-changes",
                                [r.value.dedupe_id() for r in records])
        for record in records:
            change: ProfileChange = record.value
            if change.dedupe_id() not in fresh:
                continue
            scope = instances.c.workspace_id == change.workspace_id
            if change.kind is ChangeKind.merged:
                merged = [str(i) for i in change.data.get("merged_ids", [])]
                await conn.execute(update(instances).where(
                    scope, instances.c.profile_id.in_(merged)).values(profile_id=change.profile_id))
            elif change.kind is ChangeKind.erased:
                await conn.execute(delete(instances).where(
                    scope, instances.c.profile_id == change.profile_id))
