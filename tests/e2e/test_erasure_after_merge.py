"""Erasure after a merge leaves no personal data in any table of any schema.

An anonymous visitor identifies with an email, phone and name, is sent a message, is then
merged into a known profile, and the known profile is erased. Every table of every schema
(information_schema) is then searched for the email, the phone and the name: none is left.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from services.messaging.app import create_app as messaging_app
from services.messaging.tables import messages, profile_aliases
from services.profile.app import create_app as profile_app
from services.profile.settings import ProfileSettings
from shared.contracts.envelope import JourneyRef, message_key
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from shared.testing.servers import serve_app
from shared.testing.smtp import Inbox

pytestmark = pytest.mark.integration


async def _ready(http: httpx.AsyncClient, url: str) -> None:
    for _ in range(300):
        if (await http.get(f"{url}/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def find_everywhere(engine: AsyncEngine, needles: list[str]) -> dict[str, int]:
    """Rows per table (schema.table) whose text holds any needle, over every base table of
    every schema; bytea columns are searched as text too."""
    async with engine.connect() as conn:
        columns = (await conn.execute(text(
            "SELECT table_schema, table_name, column_name, data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY table_schema, table_name, ordinal_position"))).all()
        tables: dict[tuple[str, str], list[str]] = {}
        for schema, table, column, data_type in columns:
            expr = (f'encode("{column}", \'escape\')' if data_type == "bytea"
                    else f'"{column}"::text')
            tables.setdefault((schema, table), []).append(expr)
        found: dict[str, int] = {}
        for (schema, table), exprs in tables.items():
            count = (await conn.execute(text(
                f'SELECT count(*) FROM "{schema}"."{table}" '
                f"WHERE concat_ws(' ', {', '.join(exprs)}) ILIKE ANY(:needles)"),
                {"needles": [f"%{n}%" for n in needles]})).scalar_one()
            if count:
                found[f"{schema}.{table}"] = count
        assert len(tables) > 10, tables  # really every schema's tables
        return found


async def test_no_personal_data_anywhere_after_merge_and_erasure(
    settings: Settings, unique: str, admin_headers: dict[str, str],
    write_auth: tuple[str, str], smtp: tuple[str, Inbox],
) -> None:
    own = ProfileSettings(**{**settings.model_dump(), "topic_prefix": f"test-merge-{unique}.",
                             "profile_recompute_interval_s": 3600})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-erasure")
    await producer.start()
    anon, user = f"anon-{unique}", f"known-{unique}"
    email, known_email = f"visitor-{unique}@example.com", f"known-{unique}@example.com"
    digits = "".join(random.choice("0123456789") for _ in range(7))
    phone, name = f"+1650{digits}", f"Evelyn{unique}"
    needles = [email, known_email, digits, name, f"Known{unique}"]
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = {}
        for service, create in (("ingest", ingest_app), ("profile", profile_app),
                                ("journey", journey_app), ("messaging", messaging_app)):
            urls[service] = await stack.enter_async_context(serve_app(create(own)))
            await _ready(http, urls[service])
        ingest, profile, messaging = urls["ingest"], urls["profile"], urls["messaging"]
        lookup = f"{profile}/v1/profiles/lookup"

        async def profile_of(**ident: str) -> dict[str, str]:
            for _ in range(300):
                r = await http.get(lookup, params=ident, headers=admin_headers)
                if r.status_code == 200:
                    return dict(r.json())
                await asyncio.sleep(0.1)
            raise TimeoutError(ident)

        # 1. An anonymous visitor leaves an email, phone and name.
        r = await http.post(f"{ingest}/v1/identify", auth=write_auth, json={
            "anonymousId": anon, "traits": {"email": email, "phone": phone, "name": name}})
        assert r.status_code == 200, r.text
        visitor = (await profile_of(anonymous_id=anon))["id"]

        # 2. It is sent a message carrying its name and address.
        r = await http.put(f"{messaging}/v1/templates/hello-{unique}", headers=admin_headers,
                           json={"channel": "email", "subject": "Hi {{ profile.traits.name }}",
                                 "text": "Hello {{ profile.traits.name }} "
                                         "<{{ profile.traits.email }}>"})
        assert r.status_code == 200, r.text
        key = f"erase-{unique}"
        command = SendCommand(
            id=key, workspace_id="default", profile_id=visitor, idempotency_key=key,
            channel=Channel.email, template=f"hello-{unique}", to=Recipient(email=email),
            journey=JourneyRef(key="welcome", version=1, stage="new", step="hello"),
            context={"profile": {"traits": {"name": name, "email": email}}},
            requested_at=datetime.now(UTC))
        await publish(producer, own.topic("send-commands"),
                      [(message_key("default", visitor), command)], topic_short="send-commands")
        row = None
        for _ in range(300):
            async with engine.connect() as conn:
                row = (await conn.execute(select(messages.c.status, messages.c.error).where(
                    messages.c.idempotency_key == key))).first()
            if row is not None and row.status not in ("queued", "sending"):
                break
            await asyncio.sleep(0.1)
        assert row is not None and row.status == "sent", row
        await smtp[1].wait_for_mail(email, f"Hi {name}")

        # 3. The visitor logs in: merged into a known profile.
        r = await http.post(f"{ingest}/v1/identify", auth=write_auth, json={
            "userId": user, "traits": {"email": known_email, "name": f"Known{unique}"}})
        assert r.status_code == 200
        await profile_of(user_id=user)
        r = await http.post(f"{ingest}/v1/identify", auth=write_auth,
                            json={"userId": user, "anonymousId": anon})
        assert r.status_code == 200
        for _ in range(300):
            survivor = (await profile_of(user_id=user))["id"]
            if (await profile_of(anonymous_id=anon))["id"] == survivor:
                break
            await asyncio.sleep(0.1)
        assert (await profile_of(anonymous_id=anon))["id"] == survivor

        # The search finds the person before the erasure (in profile and messaging at least).
        before = await find_everywhere(engine, needles)
        assert {"profile.profiles", "messaging.messages"} <= set(before), before

        # 4. The known profile is erased.
        r = await http.delete(f"{profile}/v1/profiles/{survivor}", headers=admin_headers)
        assert r.status_code == 200, r.text
        for _ in range(300):
            async with engine.connect() as conn:
                erased = (await conn.execute(select(messages.c.erased_at).where(
                    messages.c.idempotency_key == key))).scalar()
            if erased is not None:
                break
            await asyncio.sleep(0.1)
        assert erased is not None, "messaging never erased the visitor's message"

        # 5. Nothing of the person is left in any table of any schema.
        found: dict[str, int] = {}
        for _ in range(100):
            found = await find_everywhere(engine, needles)
            if not found:
                break
            await asyncio.sleep(0.1)
        assert found == {}, f"personal data left after erasure: {found}"
    await producer.stop()
    await engine.dispose()


async def test_erasure_reaches_profiles_merged_long_before(
    settings: Settings, unique: str, admin_headers: dict[str, str], smtp: tuple[str, Inbox],
) -> None:
    """The `erased` change may name no merged ids (merged long ago): messaging erases the
    messages of every id it saw merged into the profile, chains of merges included."""
    own = settings.model_copy(update={"topic_prefix": f"test-merged-{unique}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-erasure-merged")
    await producer.start()
    first, middle, survivor = (str(uuid.uuid4()) for _ in range(3))
    email = f"early-{unique}@example.com"
    now = datetime.now(UTC)

    def change(kind: ChangeKind, pid: str, merged: list[str]) -> ProfileChange:
        return ProfileChange(id=f"{kind.value}-{pid}", workspace_id="default", profile_id=pid,
                             kind=kind, data={"merged_ids": merged}, occurred_at=now)

    async with serve_app(messaging_app(own)) as url, httpx.AsyncClient(timeout=10) as http:
        await _ready(http, url)
        r = await http.put(f"{url}/v1/templates/early-{unique}", headers=admin_headers,
                           json={"channel": "email", "subject": "Hi",
                                 "text": "to {{ profile.traits.email }}"})
        assert r.status_code == 200, r.text
        key = f"early-{unique}"
        await publish(producer, own.topic("send-commands"), [(message_key("default", first),
            SendCommand(id=key, workspace_id="default", profile_id=first, idempotency_key=key,
                        channel=Channel.email, template=f"early-{unique}",
                        to=Recipient(email=email), requested_at=now,
                        journey=JourneyRef(key="w", version=1, stage="s", step="e"),
                        context={"profile": {"traits": {"email": email}}}))],
                      topic_short="send-commands")
        await smtp[1].wait_for_mail(email, "Hi")
        # Two merges long before (one profile, then the other: a chain), then the erasure.
        for changes in ([change(ChangeKind.merged, middle, [first])],
                        [change(ChangeKind.merged, survivor, [middle]),
                         change(ChangeKind.erased, survivor, [])]):
            await publish(producer, own.topic("profile-changes"),
                          [(message_key("default", c.profile_id), c) for c in changes],
                          topic_short="profile-changes")
            for _ in range(300):
                async with engine.connect() as conn:
                    merged = (await conn.execute(select(profile_aliases.c.merged_into).where(
                        profile_aliases.c.profile_id == first))).scalar()
                if merged is not None:
                    break
                await asyncio.sleep(0.1)
        row = None
        for _ in range(300):
            async with engine.connect() as conn:
                row = (await conn.execute(select(messages).where(
                    messages.c.idempotency_key == key))).mappings().first()
            if row is not None and row["erased_at"] is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None and row["erased_at"] is not None
        assert row["recipient"] is None and row["content"] is None
        assert await find_everywhere(engine, [email]) == {}
    await producer.stop()
    await engine.dispose()
