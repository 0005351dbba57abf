"""GDPR erasure end to end: ingest HTTP -> profile -> DELETE -> late events stay suppressed."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text

from services.ingest.app import create_app as ingest_app
from services.profile.app import create_app as profile_app
from services.profile.settings import ProfileSettings
from services.profile.tables import identities, inbox, tombstones
from shared.db import create_engine
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.ready import wait_ready
from tests.support.servers import serve_app
from tests.support.topics import read_until

pytestmark = pytest.mark.integration


async def test_erasure_removes_the_person_and_keeps_them_out(
    settings: Settings, topics: list[str], unique: str, admin_headers: dict[str, str],
    write_auth: tuple[str, str],
) -> None:
    own = ProfileSettings(**{**settings.model_dump(), "topic_prefix": f"test-erase-{unique}.",
                             "profile_recompute_interval_s": 3600})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    user, email = f"gdpr-{unique}", f"gdpr-{unique}@example.com"
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        ingest = await stack.enter_async_context(serve_app(ingest_app(own)))
        profile = await stack.enter_async_context(serve_app(profile_app(own)))
        for url in (ingest, profile):
            await wait_ready(http, url, timeout=30)
        r = await http.post(f"{ingest}/v1/identify", auth=write_auth, json={
            "userId": user, "anonymousId": f"anon-{unique}",
            "traits": {"email": email, "phone": "+16502530000", "first_name": "Eve"}})
        assert r.status_code == 200
        await http.post(f"{ingest}/v1/track", auth=write_auth,
                        json={"userId": user, "event": "Order Completed",
                              "properties": {"revenue": 20}})
        lookup = f"{profile}/v1/profiles/lookup"
        for _ in range(300):
            r = await http.get(lookup, params={"user_id": user}, headers=admin_headers)
            if r.status_code == 200 and r.json()["event_count"] == 2:
                break
            await asyncio.sleep(0.1)
        pid = r.json()["id"]

        r = await http.delete(f"{profile}/v1/profiles/{pid}", headers=admin_headers)
        assert r.status_code == 200 and r.json() == {"id": pid, "erased": True}
        assert (await http.get(f"{profile}/v1/profiles/{pid}",
                               headers=admin_headers)).status_code == 404
        for ident in ({"user_id": user}, {"email": email}, {"anonymous_id": f"anon-{unique}"}):
            assert (await http.get(lookup, params=ident,
                                   headers=admin_headers)).status_code == 404
        erased = await read_until(own.kafka_bootstrap, own.topic("profile-changes"), lambda rs: any(
            orjson.loads(x.value)["kind"] == "erased" for x in rs))
        change = next(orjson.loads(x.value) for x in erased
                      if orjson.loads(x.value)["kind"] == "erased")
        assert change["profile_id"] == pid and "profile" not in change

        # Late events and a re-import by email alone must not bring the person back.
        late = [f"late-{uuid.uuid4().hex}" for _ in range(2)]
        await http.post(f"{ingest}/v1/track", auth=write_auth, json={
            "userId": user, "event": "Order Completed", "messageId": late[0]})
        await http.post(f"{ingest}/v1/identify", auth=write_auth, json={
            "anonymousId": f"new-device-{unique}", "traits": {"email": email.upper()},
            "messageId": late[1]})
        wanted = [f"{own.default_workspace}:{m}" for m in late]
        for _ in range(300):
            async with engine.connect() as conn:
                seen = (await conn.execute(select(func.count()).select_from(inbox).where(
                    inbox.c.message_id.in_(wanted)))).scalar_one()
            if seen == 2:
                break
            await asyncio.sleep(0.1)
        assert seen == 2, "the late events were never consumed"
        for ident in ({"user_id": user}, {"email": email},
                      {"anonymous_id": f"new-device-{unique}"}):
            assert (await http.get(lookup, params=ident,
                                   headers=admin_headers)).status_code == 404
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(identities).where(
                identities.c.profile_id == pid))).scalar_one() == 0
            hashes = (await conn.execute(select(tombstones.c.identifier_hash))).scalars().all()
            assert all(len(h) == 64 and email not in h for h in hashes)
            leftovers = (await conn.execute(text(
                "SELECT count(*) FROM profile.events WHERE profile_id = :p"), {"p": pid}
            )).scalar_one()
            assert leftovers == 0
    await engine.dispose()
