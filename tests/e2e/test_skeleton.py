"""One event walks the whole way: HTTP -> ingest -> profile -> journey -> messaging -> SMTP."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import orjson
import pytest

from shared.settings import Settings
from tests.support.servers import serve_all
from tests.support.smtp import Inbox
from tests.support.topics import read_until

pytestmark = pytest.mark.integration

WELCOME = {
    "key": "welcome",
    "name": "Welcome new sign-ups",
    "stages": [{"key": "signed-up", "enter": {"event": "Signed Up"},
                "steps": [{"id": "hello", "send": {"channel": "email", "template": "welcome"}}]}],
}



async def test_track_event_becomes_an_email(
    settings: Settings, topics: list[str], smtp: tuple[str, Inbox], unique: str,
    admin_headers: dict[str, str], write_auth: tuple[str, str],
) -> None:
    _, inbox = smtp
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = await serve_all(stack, http, settings)
        admin = admin_headers

        r = await http.put(f"{urls['messaging']}/v1/templates/welcome", headers=admin, json={
            "channel": "email", "subject": "Welcome, {{ profile.traits.first_name }}!",
            "text": "Hi {{ profile.traits.first_name }}, thanks for joining.",
            "html": "<p>Hi {{ profile.traits.first_name }}</p>"})
        assert r.status_code == 200, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys", headers=admin, json=WELCOME)
        assert r.status_code == 201, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys/welcome/publish", headers=admin)
        assert r.status_code == 200 and r.json()["published_version"] == 1, r.text

        user = f"user-{unique}"
        auth = write_auth
        r = await http.post(f"{urls['ingest']}/v1/identify", auth=auth, json={
            "userId": user, "traits": {"email": f"{user}@example.com", "first_name": "Ada"}})
        assert r.json() == {"success": True}
        r = await http.post(f"{urls['ingest']}/v1/track", auth=auth, json={
            "userId": user, "event": "Signed Up", "messageId": f"signup-{unique}"})
        assert r.status_code == 200 and r.json() == {"success": True}

        mail = await inbox.wait_for_mail(f"{user}@example.com", "Welcome, Ada!")
        assert "thanks for joining" in mail.get_body(("plain",)).get_content()

        r = await http.get(f"{urls['profile']}/v1/profiles/lookup", headers=admin,
                           params={"user_id": user})
        assert r.status_code == 200, r.text
        profile_id = r.json()["id"]

        # The pipes in between carried the envelopes, keyed workspace_id:customer.
        def delivered(recs: list) -> bool:
            return any(orjson.loads(r.value)["status"] == "sent" and
                       orjson.loads(r.value)["profile_id"] == profile_id for r in recs)
        records = await read_until(settings.kafka_bootstrap, settings.topic("delivery-events"),
                                   delivered)
        sent = [orjson.loads(r.value) for r in records if r.key == f"default:{profile_id}".encode()]
        assert any(s["status"] == "sent" and s["idempotency_key"] for s in sent)
        events = await read_until(settings.kafka_bootstrap, settings.topic("events"),
                                  lambda rs: any(r.key == f"default:{user}".encode() for r in rs))
        assert any(orjson.loads(r.value)["id"] == f"signup-{unique}" for r in events)

        assert r.json()["traits"]["first_name"] == "Ada"
        r = await http.get(f"{urls['messaging']}/v1/messages", headers=admin,
                           params={"profile_id": profile_id})
        assert [m["status"] for m in r.json()["items"]] == ["sent"]
        r = await http.get(f"{urls['journey']}/v1/journeys/welcome/stats", headers=admin)
        assert r.json()["stages"]["signed-up"]["completed"] == 1
