"""The web console against the four real services (real Postgres and Tansu broker)."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
from profile_support import eventually

from shared.contracts.profile import ProfileSnapshot
from shared.settings import Settings
from tests.support.console import ConsoleStack, console_stack
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration
ADMIN_KEY_PAGES = ("/journeys", "/customers", "/kpis", "/templates", "/broadcasts",
                   "/policy", "/journeys/nope", "/customers/nope")
SCRIPT = "<script>alert(1)</script>"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(settings: Settings, topics: list[str]) -> AsyncIterator[ConsoleStack]:
    async with console_stack(settings) as found:
        yield found


@asynccontextmanager
async def sign_in(stack: ConsoleStack, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.console, timeout=10, trust_env=False) as client:
        page = await client.get("/")
        r = await client.post("/", data={"admin_key": key, "csrf": csrf_of(page)})
        assert r.status_code == 303, r.text
        yield client


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:2000]
    return found.group(1)


async def test_health_ready_metrics(stack: ConsoleStack) -> None:
    async with httpx.AsyncClient(base_url=stack.console, trust_env=False) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == dict.fromkeys(
            ("ingest", "profile", "journey", "messaging"), True)
        assert "touchpoint_http" in (await http.get("/metrics")).text


async def test_every_page_wants_a_session(stack: ConsoleStack) -> None:
    async with httpx.AsyncClient(base_url=stack.console, trust_env=False) as http:
        for path in ADMIN_KEY_PAGES:
            r = await http.get(path)
            assert (r.status_code, r.headers["location"]) == (303, "/"), path
        # A forged or tampered cookie is no session either.
        r = await http.get("/journeys", cookies={"tp_console": "gAAAAAforged"})
        assert r.status_code == 303


async def test_sign_in_refuses_a_wrong_key_and_checks_csrf(stack: ConsoleStack) -> None:
    async with httpx.AsyncClient(base_url=stack.console, trust_env=False) as http:
        page = await http.get("/")
        r = await http.post("/", data={"admin_key": "tp_admin_wrong", "csrf": csrf_of(page)})
        assert r.status_code == 401
        assert "refused" in r.text and "tp_console=" not in r.headers.get("set-cookie", "")
        r = await http.post("/", data={"admin_key": "whatever", "csrf": "forged"})
        assert r.status_code == 403


async def test_session_cookie_flags_csrf_and_sign_out(stack: ConsoleStack,
                                                      admin_headers: dict[str, str]) -> None:
    key = admin_headers["Authorization"].removeprefix("Bearer ")
    async with sign_in(stack, key) as client:
        cookie = next(v for k, v in client.cookies.items() if k == "tp_console")
        assert key not in cookie  # encrypted, never the plain key
        page = await client.get("/journeys")
        assert page.status_code == 200
        set_cookie = page.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        # A form without the session's token is refused.
        r = await client.post("/signout", data={"csrf": "nope"})
        assert r.status_code == 403
        r = await client.post("/signout", data={"csrf": csrf_of(page)})
        assert (r.status_code, r.headers["location"]) == (303, "/")
        client.cookies.clear()
        assert (await client.get("/journeys")).status_code == 303


async def test_journey_list_stats_and_stage_map_counts(
    stack: ConsoleStack, unique: str, admin_headers: dict[str, str],
    write_auth: tuple[str, str],
) -> None:
    key = f"console-{unique}"
    document = {"key": key, "name": f"Console {unique}", "stages": [
        {"key": "signed-up", "enter": {"event": f"Joined {unique}"}, "steps": [
            {"id": "pause", "wait": "P3D"},
            {"id": "hello", "send": {"channel": "email", "template": "welcome"}}]},
        {"key": "bought", "enter": {"event": f"Bought {unique}"}}]}
    api, urls = admin_headers, stack.urls
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        # Journey checks the templates a journey names with messaging on save.
        tpl = f"{urls['messaging']}/v1/templates/welcome"
        if (await http.get(tpl, headers=api)).status_code == 404:
            r = await http.put(tpl, headers=api, json={"channel": "email", "subject": "Welcome",
                                                       "text": "Hello"})
            assert r.status_code == 200, r.text
        assert (await http.post(f"{urls['journey']}/v1/journeys", headers=api,
                                json=document)).status_code == 201
        assert (await http.post(f"{urls['journey']}/v1/journeys/{key}/publish",
                                headers=api)).status_code == 200
        for n in range(2):
            r = await http.post(f"{urls['ingest']}/v1/track", auth=write_auth, json={
                "userId": f"u{n}-{unique}", "event": f"Joined {unique}",
                "messageId": f"j{n}-{unique}"})
            assert r.status_code == 200

        async def two_waiting() -> Any:
            stats = (await http.get(f"{urls['journey']}/v1/journeys/{key}/stats",
                                    headers=api)).json()
            return stats if stats["active_by_step"].get("signed-up", {}).get("pause") == 2 \
                else None

        stats = await eventually(two_waiting, timeout=20)
        listed = (await http.get(f"{urls['journey']}/v1/journeys", headers=api,
                                 params={"include": "stats"})).json()["items"]
        mine = next(j for j in listed if j["key"] == key)
        assert mine["stats"] == {"entries": 2, "active": 2, "customers": 2, "converted": 0}
        assert "stats" not in (await http.get(f"{urls['journey']}/v1/journeys",
                                              headers=api)).json()["items"][0]

    async with sign_in(stack, api["Authorization"].removeprefix("Bearer ")) as client:
        page = await client.get("/journeys")
        assert f'href="/journeys/{key}"' in page.text
        page = await client.get(f"/journeys/{key}")
        assert page.status_code == 200
        drawn = dict(re.findall(r'data-step="([^"]+)" data-active="(\d+)"', page.text))
        assert drawn == {s: str(n) for s, n in
                         {"pause": stats["active_by_step"]["signed-up"]["pause"],
                          "hello": 0}.items()}
        assert 'data-stage="signed-up" data-active="2"' in page.text
        assert 'hx-trigger="every 5s, visible-again"' in page.text and "data-live" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp
        live = await client.get(f"/journeys/{key}/live")
        assert 'data-step="pause" data-active="2"' in live.text

        # The draft editor: a wrong document is refused with the error at its path.
        bad = document | {"stages": [{"key": "x", "enter": {}, "steps": [{"id": "a"}]}]}
        r = await client.post(f"/journeys/{key}/draft",
                              data={"document": json.dumps(bad), "csrf": csrf_of(page)})
        assert r.status_code == 400
        assert "stages.0.steps.0" in r.text
        yaml_doc = f"key: {key}\nname: Renamed\nstages:\n  - key: a\n    enter: {{event: E}}\n"
        r = await client.post(f"/journeys/{key}/draft",
                              data={"document": yaml_doc, "csrf": csrf_of(page)})
        assert r.status_code == 303
        # Simulation shows the virtual-time trace.
        r = await client.post(f"/journeys/{key}/simulate", data={
            "csrf": csrf_of(page), "profile": '{"profile_id": "p1"}',
            "events": '[{"event": "E"}]'})
        assert r.status_code == 200 and 'id="sim-trace"' in r.text and "entered" in r.text
        r = await client.post(f"/journeys/{key}/simulate", data={
            "csrf": csrf_of(page), "customer": "no-such-customer", "events": "[]"})
        assert r.status_code == 404 and 'class="problem"' in r.text
        # Pause, then resume.
        r = await client.post(f"/journeys/{key}/pause", data={"csrf": csrf_of(page)})
        assert r.status_code == 303
        assert ">paused<" in (await client.get(f"/journeys/{key}")).text
        assert (await client.get("/journeys/no-such-journey")).status_code == 404


async def test_customer_page_escapes_and_explains(
    stack: ConsoleStack, unique: str, admin_headers: dict[str, str],
    write_auth: tuple[str, str],
) -> None:
    urls, user = stack.urls, f"xss-{unique}"
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        r = await http.post(f"{urls['ingest']}/v1/identify", auth=write_auth, json={
            "userId": user, "traits": {"name": SCRIPT, "email": f"{user}@example.com",
                                       "bio": "<img src=x onerror=alert(2)>"}})
        assert r.status_code == 200
        r = await http.post(f"{urls['ingest']}/v1/track", auth=write_auth, json={
            "userId": user, "event": "Viewed", "properties": {"html": SCRIPT}})

        async def found() -> Any:
            r = await http.get(f"{urls['profile']}/v1/profiles/lookup", headers=admin_headers,
                               params={"user_id": user})
            if r.status_code != 200 or not r.json()["event_count"]:
                return None
            return r.json()

        profile = await eventually(found, timeout=20)
        snap = await http.get(f"{urls['profile']}/v1/profiles/{profile['id']}/snapshot",
                              headers=admin_headers)
        assert snap.status_code == 200
        parsed = ProfileSnapshot.model_validate(snap.json())
        assert parsed.profile_id == profile["id"] and parsed.traits["name"] == SCRIPT
        assert (await http.get(f"{urls['profile']}/v1/profiles/nope/snapshot",
                               headers=admin_headers)).status_code == 404

    async with sign_in(stack, admin_headers["Authorization"].removeprefix("Bearer ")) as client:
        search = await client.get("/customers", params={"q": user})
        assert f'href="/customers/{profile["id"]}"' in search.text
        page = await client.get(f"/customers/{profile['id']}")
        assert page.status_code == 200
        assert SCRIPT not in page.text and "<img src=x" not in page.text
        assert html.escape(SCRIPT) in page.text
        assert (await client.get("/customers/does-not-exist")).status_code == 404
        assert (await client.get("/customers/" + "x" * 60)).status_code == 404


async def test_template_preview_follows_edits_and_customer(
    stack: ConsoleStack, unique: str, admin_headers: dict[str, str],
    write_auth: tuple[str, str],
) -> None:
    urls, key, user = stack.urls, f"tpl-{unique}", f"ada-{unique}"
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        r = await http.put(f"{urls['messaging']}/v1/templates/{key}", headers=admin_headers,
                           json={"channel": "email", "subject": "Hi there",
                                 "html": "<p>Hello {{ profile.traits.first_name }}</p>"})
        assert r.status_code == 200, r.text
        await http.post(f"{urls['ingest']}/v1/identify", auth=write_auth, json={
            "userId": user, "traits": {"first_name": "Ada", "email": f"{user}@example.com"}})

        async def found() -> Any:
            r = await http.get(f"{urls['profile']}/v1/profiles/lookup", headers=admin_headers,
                               params={"user_id": user})
            return r.json() if r.status_code == 200 else None

        profile = await eventually(found, timeout=20)
    async with sign_in(stack, admin_headers["Authorization"].removeprefix("Bearer ")) as client:
        page = await client.get(f"/templates/{key}")
        assert page.status_code == 200
        token = csrf_of(page)
        form = {"csrf": token, "channel": "email", "subject": "Hi {{ profile.traits.first_name }}",
                "html": "<p>Hello {{ profile.traits.first_name }}</p>", "text": "",
                "category": "marketing", "topic": "", "customer": profile["id"]}
        r = await client.post(f"/templates/{key}/preview", data=form)
        assert "Hi Ada" in r.text and "sandbox" in r.text and "srcdoc=" in r.text
        r = await client.post(f"/templates/{key}/preview",
                              data=form | {"subject": "Bye {{ profile.traits.first_name }}"})
        assert "Bye Ada" in r.text
        r = await client.post(f"/templates/{key}/preview", data=form | {"html": "{% if %}"})
        assert 'class="problem"' in r.text
        r = await client.post(f"/templates/{key}", data=form | {"subject": "Saved"})
        assert r.status_code == 303
        listing = await client.get("/templates")
        assert key in listing.text and ".console-preview" not in listing.text
        async with httpx.AsyncClient(trust_env=False, headers=admin_headers) as http:
            saved = (await http.get(f"{urls['messaging']}/v1/templates")).json()["items"]
        assert not [t for t in saved if t["key"].startswith(key + ".")]  # previews save nothing
        # Test send: messaging's answer, or a clear panel where the route is missing.
        async with httpx.AsyncClient(trust_env=False) as http:
            route = (await http.get(f"{urls['messaging']}/openapi.json")).json()["paths"]
        r = await client.post(f"/templates/{key}/test-send", data={
            "csrf": token, "to": f"{user}@example.com", "customer": profile["id"]})
        assert r.status_code == 200
        if "/v1/templates/{key}/test-send" in route:
            assert 'id="test-sent"' in r.text or 'class="problem"' in r.text
        else:
            assert "Test send not available" in r.text


async def test_kpis_and_broadcasts_render_or_say_not_available(
        stack: ConsoleStack, admin_headers: dict[str, str]) -> None:
    key = admin_headers["Authorization"].removeprefix("Bearer ")
    async with sign_in(stack, key) as client, httpx.AsyncClient(trust_env=False) as http:
        for page, service, path in (("/kpis", "profile", "/v1/kpis"),
                                    ("/broadcasts", "journey", "/v1/broadcasts")):
            api = await http.get(stack.urls[service] + path, headers=admin_headers)
            r = await client.get(page)
            if api.status_code == 404:
                assert r.status_code == 200 and "Not available on this stack" in r.text
            else:
                assert r.status_code == 200 and "Not available" not in r.text


async def test_a_service_down_is_a_503_page(settings: Settings,
                                            admin_headers: dict[str, str]) -> None:
    from services.console.app import create_app
    from services.console.settings import ConsoleSettings

    dead = ConsoleSettings(**settings.model_dump(), profile_url="http://127.0.0.1:9",
                           journey_url="http://127.0.0.1:9", console_api_timeout_s=1)
    async with serve_app(create_app(dead)) as url, httpx.AsyncClient(
            base_url=url, trust_env=False) as http:
        page = await http.get("/")
        r = await http.post("/", data={"admin_key": "k", "csrf": csrf_of(page)})
        assert r.status_code == 503 and "not answering" in r.text
        assert (await http.get("/readyz")).status_code == 503


async def test_segment_page_and_html_errors(stack: ConsoleStack, unique: str,
                                            admin_headers: dict[str, str],
                                            write_auth: tuple[str, str]) -> None:
    urls, key = stack.urls, f"seg-{unique}"
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        await http.post(f"{urls['ingest']}/v1/identify", auth=write_auth, json={
            "userId": f"vip-{unique}", "traits": {"tier": f"gold-{unique}"}})

        async def known() -> Any:
            return (await http.get(f"{urls['profile']}/v1/profiles/lookup",
                                   headers=admin_headers,
                                   params={"user_id": f"vip-{unique}"})).status_code == 200

        await eventually(known, timeout=20)
        r = await http.put(f"{urls['profile']}/v1/segments/{key}", headers=admin_headers, json={
            "name": "Gold <b>VIPs</b>", "rule": {
                "field": "profile.traits.tier", "op": "eq", "value": f"gold-{unique}"}})
        assert r.status_code == 200, r.text
    key_ = admin_headers["Authorization"].removeprefix("Bearer ")
    async with sign_in(stack, key_) as client:
        assert key in (await client.get("/segments")).text
        page = await client.get(f"/segments/{key}")
        assert page.status_code == 200 and "<b>VIPs</b>" not in page.text
        assert '<span id="segment-count">1</span>' in page.text
        assert "profile.traits.tier eq" in page.text
        assert (await client.get("/segments/nope")).status_code == 404
        missing = await client.get("/no-such-page")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
        bad = await client.get("/journeys/x", params={"version": "abc"})
        assert bad.status_code == 400 and "version" in bad.text


async def test_a_revoked_key_ends_the_session_at_the_next_check(
        stack: ConsoleStack, settings: Settings, unique: str) -> None:
    from sqlalchemy import func, insert, update

    from services.console.app import create_app
    from services.console.settings import ConsoleSettings
    from services.profile.tables import api_keys
    from shared.auth import hash_key

    key = f"tp_admin_console_{unique}"
    profile = stack.apps["profile"].state.runtime
    async with profile.engine.begin() as conn:
        await conn.execute(insert(api_keys).values(
            key_hash=hash_key(key), kind="admin", workspace_id="default", name="console test"))
    quick = ConsoleSettings(**settings.model_dump(), console_recheck_s=1,
                            **{f"{n}_url": stack.urls[n] for n in
                               ("ingest", "profile", "journey", "messaging")})
    async with serve_app(create_app(quick)) as url, httpx.AsyncClient(
            base_url=url, trust_env=False) as http:
        page = await http.get("/")
        assert (await http.post("/", data={"admin_key": key, "csrf": csrf_of(page)})
                ).status_code == 303
        assert (await http.get("/customers")).status_code == 200
        async with profile.engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.key_hash == hash_key(key))
                               .values(revoked_at=func.now()))
        profile.keyring.forget()
        await asyncio.sleep(1.1)
        r = await http.get("/customers")
        assert (r.status_code, r.headers["location"]) == (303, "/")


async def test_policy_page_shows_edits_and_validates_at_the_path(
        stack: ConsoleStack, unique: str, admin_headers: dict[str, str]) -> None:
    key = admin_headers["Authorization"].removeprefix("Bearer ")
    url = stack.urls["journey"] + "/v1/policy"
    async with sign_in(stack, key) as client, httpx.AsyncClient(trust_env=False) as http:
        before = (await http.get(url, headers=admin_headers)).json()["policy"]
        page = await client.get("/policy")
        assert page.status_code == 200 and 'href="/policy"' in page.text
        shown = re.search(r'<textarea name="document" id="policy-document"[^>]*>(.*?)</textarea>',
                          page.text, re.S)
        assert shown and json.loads(html.unescape(shown.group(1))) == before
        try:
            # YAML; each problem at its path (a field, a cross-field rule), the text kept.
            bad = "caps:\n  - {channel: email, max: 0, per: P7D}\npriority: [a, a]\n"
            r = await client.post("/policy", data={"document": bad, "csrf": csrf_of(page)})
            assert r.status_code == 400
            errors = re.findall(r"<li><code>([^<]+)</code>: ([^<]+)</li>", r.text)
            assert ("caps.0.max" in {f for f, _ in errors}), errors
            assert "max: 0" in html.unescape(r.text)  # the edited text stays
            r = await client.post("/policy", data={"document": "caps: [", "csrf": csrf_of(page)})
            assert r.status_code == 400 and "neither JSON nor YAML at line" in r.text
            # A form without the session's token changes nothing.
            good = (f"caps:\n  - {{channel: email, max: 9, per: P1D}}\n"
                    f"priority: [console-{unique}]\n")
            r = await client.post("/policy", data={"document": good, "csrf": "forged"})
            assert r.status_code == 403
            assert (await http.get(url, headers=admin_headers)).json()["policy"] == before
            r = await client.post("/policy", data={"document": good, "csrf": csrf_of(page)})
            assert (r.status_code, r.headers["location"]) == (303, "/policy?saved=1")
            saved = (await http.get(url, headers=admin_headers)).json()["policy"]
            assert saved["priority"] == [f"console-{unique}"]
            assert saved["caps"][0]["max"] == 9
            page = await client.get("/policy?saved=1")
            assert 'id="policy-saved"' in page.text and f"console-{unique}" in page.text
        finally:  # other tests of this module send mail under the workspace's policy
            r = await http.put(url, headers=admin_headers, json=before)
            assert r.status_code == 200, r.text
