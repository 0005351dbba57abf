"""Erasure after a merge leaves no personal data in any table of any schema.

An anonymous visitor identifies with an email, phone and name, is sent a message, is then
merged into a known profile, and the known profile is erased. Every table of every schema
(information_schema) is then searched for the email, the phone and the name: none is left.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from services.journey.settings import JourneySettings
from services.journey.tables import broadcast_audience, snapshots
from services.messaging.app import create_app as messaging_app
from services.messaging.domain.consent import ERASED
from services.messaging.tables import codes, consents, messages, profile_aliases
from services.profile.app import create_app as profile_app
from services.profile.settings import ProfileSettings
from shared.contracts.envelope import JourneyRef, message_key
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.ready import wait_ready
from tests.support.servers import serve_app
from tests.support.smtp import Inbox

pytestmark = pytest.mark.integration


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
    """Before the erasure the visitor is sent a message with a discount code, opens and
    clicks it, orders (KPI rollups), is in a broadcast's audience (sent) and in a second
    one's held back by the contact policy (deferred), and is sent test sends (to the
    visitor's address and to the known profile's, never otherwise messaged); after it,
    neither the email, phone and name nor the erased ids are left where they would link a
    row back to the person (the send log and the erasure marker keep the bare id:
    docs/profile.md, Erasure)."""
    base = {**settings.model_dump(), "topic_prefix": f"test-merge-{unique}."}
    own = ProfileSettings(**base, profile_recompute_interval_s=3600)
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-erasure")
    await producer.start()
    anon, user = f"anon-{unique}", f"known-{unique}"
    email, known_email = f"visitor-{unique}@example.com", f"known-{unique}@example.com"
    digits = "".join(random.choice("0123456789") for _ in range(7))
    phone, name = f"+1650{digits}", f"Evelyn{unique}"
    needles = [email, known_email, digits, name, f"Known{unique}"]
    pool, seg, tpl = f"thx-{unique}", f"er-{unique}", f"hello-{unique}"
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = {"messaging": await stack.enter_async_context(serve_app(messaging_app(own)))}
        urls["profile"] = await stack.enter_async_context(serve_app(profile_app(own)))
        urls["journey"] = await stack.enter_async_context(serve_app(journey_app(
            JourneySettings(**base, messaging_url=urls["messaging"],
                            profile_url=urls["profile"]))))
        urls["ingest"] = await stack.enter_async_context(serve_app(ingest_app(own)))
        for url in urls.values():
            await wait_ready(http, url, timeout=30)
        ingest, profile, messaging = urls["ingest"], urls["profile"], urls["messaging"]
        journey = urls["journey"]
        lookup = f"{profile}/v1/profiles/lookup"

        async def profile_of(**ident: str) -> dict[str, str]:
            for _ in range(300):
                r = await http.get(lookup, params=ident, headers=admin_headers)
                if r.status_code == 200:
                    return dict(r.json())
                await asyncio.sleep(0.1)
            raise TimeoutError(ident)

        # 0. A segment that holds only this visitor, a code pool, a template with a code.
        r = await http.put(f"{profile}/v1/segments/{seg}", headers=admin_headers, json={
            "name": "Erasure", "rule": {"field": "profile.traits.cohort", "op": "eq",
                                        "value": seg}})
        assert r.status_code == 200, r.text
        r = await http.put(f"{messaging}/v1/code-pools/{pool}", headers=admin_headers,
                           json={"codes": [f"CODE-{unique}"]})
        assert r.status_code == 200, r.text
        r = await http.put(f"{messaging}/v1/templates/{tpl}", headers=admin_headers,
                           json={"channel": "email", "subject": "Hi {{ profile.traits.name }}",
                                 "html": "<p>Hello {{ profile.traits.name }} "
                                         "&lt;{{ profile.traits.email }}&gt; "
                                         f"{{{{ '{pool}' | code }}}} "
                                         '<a href="https://shop.example/x">shop</a></p>'})
        assert r.status_code == 200, r.text

        # 1. An anonymous visitor leaves an email, phone and name.
        r = await http.post(f"{ingest}/v1/identify", auth=write_auth, json={
            "anonymousId": anon, "traits": {"email": email, "phone": phone, "name": name,
                                              "cohort": seg}})
        assert r.status_code == 200, r.text
        visitor = (await profile_of(anonymous_id=anon))["id"]

        # 2. It is sent a message carrying its name, address and a discount code; it opens
        # and clicks it, and orders (KPI rollups: people, touches, orders).
        key = f"erase-{unique}"
        command = SendCommand(
            id=key, workspace_id="default", profile_id=visitor, idempotency_key=key,
            channel=Channel.email, template=tpl, to=Recipient(email=email),
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
        mail = await smtp[1].wait_for_mail(email, f"Hi {name}")
        html = str(mail.get_body(("html",)).get_content())  # type: ignore[union-attr]
        assert f"CODE-{unique}" in html
        for kind, status in (("o", 200), ("c", 302)):
            found = re.search(rf'https?://[^"\'\s>]+(/t/{kind}/[^"\'\s>]+)', html)
            assert found, html
            r = await http.get(messaging + found.group(1))
            assert r.status_code == status, r.text
        r = await http.post(f"{ingest}/v1/track", auth=write_auth, json={
            "anonymousId": anon, "event": "Order Completed",
            "properties": {"order_id": f"order-{unique}", "total": 30}})
        assert r.status_code == 200, r.text

        # 3. A broadcast reaches it; a second one is held back by the contact policy (one
        # email a day) and waits, deferred, in its audience.
        await _until_in_segment(engine, visitor, seg)

        async def no_policy() -> None:  # the workspace's policy, as other tests expect it
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.put(f"{journey}/v1/policy", headers=admin_headers, json={})
            assert r.status_code == 200, r.text
        stack.push_async_callback(no_policy)  # after the erasure: the deferral must hold
        r = await http.put(f"{journey}/v1/policy", headers=admin_headers, json={
            "caps": [{"channel": "email", "max": 1, "per": "P1D"}],
            "on_hold": {"defer": True, "expire_after": "P2D"}})
        assert r.status_code == 200, r.text
        for n in (1, 2):
            b = f"{seg}-{n}"
            r = await http.put(f"{journey}/v1/broadcasts/{b}", headers=admin_headers,
                               json={"name": f"Sale {n}", "segment": seg, "template": tpl})
            assert r.status_code in (200, 201), r.text
            r = await http.post(f"{journey}/v1/broadcasts/{b}/send", headers=admin_headers)
            assert r.status_code == 200, r.text
            await _until_audience(engine, b, "sent" if n == 1 else "pending")

        # 4. A tester sends the template to the visitor's own address, and to the known
        # profile's, which messaging has never sent anything to (so no erasure could find
        # it by address): neither names a customer, so neither keeps its address.
        for to in (email, known_email):
            r = await http.post(f"{messaging}/v1/templates/{tpl}/test-send",
                                headers=admin_headers, json={"to": to})
            assert r.status_code == 200 and r.json()["status"] == "sent", r.text
            r = await http.get(f"{messaging}/v1/messages/{r.json()['message_id']}",
                               headers=admin_headers)
            test_send = r.json()
            assert test_send["profile_id"] == "test-send" and test_send["status"] == "sent"
            assert test_send["recipient"] is None and test_send["content"] is None
            assert test_send["erased_at"] is not None

        # 5. The visitor logs in: merged into a known profile.
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

        # The search finds the person before the erasure, and the ids in the new tables.
        before = await find_everywhere(engine, needles)
        assert {"profile.profiles", "messaging.messages"} <= set(before), before
        tables = {"journey.broadcast_audience", "messaging.codes", "profile.kpi_numbers",
                  "profile.kpi_touches", "profile.kpi_orders"}
        linked: dict[str, int] = {}
        for _ in range(300):  # the opens, clicks and order reach the rollups
            linked = await find_everywhere(engine, [visitor, survivor])
            if tables <= set(linked):
                break
            await asyncio.sleep(0.1)
        assert tables <= set(linked), linked

        # 6. The known profile is erased.
        r = await http.delete(f"{profile}/v1/profiles/{survivor}", headers=admin_headers)
        assert r.status_code == 200, r.text
        erased = await _scalar_once_set(engine, select(messages.c.erased_at).where(
            messages.c.idempotency_key == key))
        assert erased is not None, "messaging never erased the visitor's message"

        # 7. Nothing of the person is left in any table of any schema; the bare ids only in
        # the send log (content and address gone) and messaging's erasure marker.
        found: dict[str, int] = {}
        ids: dict[str, int] = {}
        for _ in range(100):
            found = await find_everywhere(engine, needles)
            ids = await find_everywhere(engine, [visitor, survivor])
            if not found and set(ids) <= KEEPS_BARE_ID:
                break
            await asyncio.sleep(0.1)
        assert found == {}, f"personal data left after erasure: {found}"
        assert set(ids) <= KEEPS_BARE_ID, f"erased ids left after erasure: {ids}"
        async with engine.connect() as conn:
            left = (await conn.execute(select(consents.c.scope).where(
                consents.c.profile_id.in_([visitor, survivor])))).scalars().all()
            assert set(left) == {ERASED}, left
            code = (await conn.execute(select(codes.c.profile_id).where(
                codes.c.pool == pool))).scalar_one()
            assert code is not None and code.startswith("erased:")  # used, not free again
        # The broadcasts keep their counts: the one sent, the deferred one suppressed.
        for n, (status, count) in ((1, ("sent", 1)), (2, ("suppressed", 1))):
            r = await http.get(f"{journey}/v1/broadcasts/{seg}-{n}", headers=admin_headers)
            assert r.json()["counts"][status] == count, r.json()
        assert r.json()["counts"]["reasons"] == {"erased": 1}, r.json()
    await producer.stop()
    await engine.dispose()


# Tables where an erased profile's bare id may stay: the send log (recipient and content
# erased: statistics) and the erasure marker that stops commands already on their way.
# Inboxes keep the ids of processed messages (which may name the profile) until their
# retention pass (docs/reliability.md).
KEEPS_BARE_ID = {"messaging.messages", "messaging.consents", "profile.inbox", "journey.inbox",
                 "messaging.inbox"}


async def _until_in_segment(engine: AsyncEngine, profile_id: str, segment: str) -> None:
    for _ in range(300):
        async with engine.connect() as conn:
            seen = (await conn.execute(select(snapshots.c.segments).where(
                snapshots.c.profile_id == profile_id))).scalar()
        if seen and segment in seen:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"journey never saw {profile_id} in {segment}")


async def _until_audience(engine: AsyncEngine, broadcast: str, status: str) -> None:
    for _ in range(300):
        async with engine.connect() as conn:
            got = (await conn.execute(select(broadcast_audience.c.status).where(
                broadcast_audience.c.broadcast_key == broadcast))).scalars().all()
        if got == [status]:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{broadcast}: audience {got}, not [{status}]")


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
        await wait_ready(http, url, timeout=30)
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
        async with engine.begin() as conn:  # a provider's reply quoting the address, and
            # the send command kept for a retry (as a transient failure leaves them)
            sent = (await conn.execute(select(messages.c.id).where(
                messages.c.idempotency_key == key))).scalar_one()
            await conn.execute(update(messages).where(messages.c.id == sent).values(
                error=f"550 <{email.upper()}>: mailbox full",
                command=SendCommand(
                    id=key, workspace_id="default", profile_id=first, idempotency_key=key,
                    channel=Channel.email, template=f"early-{unique}",
                    to=Recipient(email=email), requested_at=now).model_dump(mode="json")))
        # Two merges long before (one profile, then the other: a chain), then the erasure.
        for changes in ([change(ChangeKind.merged, middle, [first])],
                        [change(ChangeKind.merged, survivor, [middle]),
                         change(ChangeKind.erased, survivor, [])]):
            await publish(producer, own.topic("profile-changes"),
                          [(message_key("default", c.profile_id), c) for c in changes],
                          topic_short="profile-changes")
            await _scalar_once_set(engine, select(profile_aliases.c.merged_into).where(
                profile_aliases.c.profile_id == first))
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


async def _scalar_once_set(engine: AsyncEngine, query: Any) -> Any:
    """`query`'s scalar once it is not None, polled for up to 30 s (else None)."""
    value = None
    for _ in range(300):
        async with engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        if value is not None:
            break
        await asyncio.sleep(0.1)
    return value
