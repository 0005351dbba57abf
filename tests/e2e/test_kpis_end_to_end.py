"""The KPI system through all four services: a journey sends emails, the test opens and clicks
through the real tracking URLs in the received emails, places orders and a refund, and the
rates and attributed revenue of that journey come out as computed by hand.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from services.messaging.app import create_app as messaging_app
from services.profile.app import create_app as profile_app
from services.profile.settings import ProfileSettings
from shared.settings import Settings
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app
from shared.testing.smtp import Inbox

pytestmark = pytest.mark.integration


async def test_rates_and_attributed_revenue_of_a_journey(
    settings: Settings, topics: list[str], smtp: tuple[str, Inbox], unique: str,
    admin_headers: dict[str, str], write_auth: tuple[str, str],
) -> None:
    _, inbox = smtp
    key, template = f"kpi-welcome-{unique}", f"kpi-offer-{unique}"
    users = {name: f"kpi-{name}-{unique}" for name in ("clicker", "opener", "silent")}
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = {"journey": await stack.enter_async_context(serve_app(journey_app(settings)))}
        own = ProfileSettings(**{**settings.model_dump(), "journey_url": urls["journey"]})
        for name, factory, conf in (("ingest", ingest_app, settings),
                                    ("profile", profile_app, own),
                                    ("messaging", messaging_app, settings)):
            urls[name] = await stack.enter_async_context(serve_app(factory(conf)))
        for url in urls.values():
            await wait_ready(http, url, timeout=30)
        r = await http.put(f"{urls['messaging']}/v1/templates/{template}", headers=admin_headers,
                           json={"channel": "email", "subject": "Welcome offer",
                                 "html": '<p>Hi! <a href="https://shop.example/offer">'
                                         "Shop now</a></p>"})
        assert r.status_code == 200, r.text
        journey = {"key": key, "name": "KPI welcome", "holdout_percent": 0,
                   "stages": [{"key": "joined", "enter": {"event": f"Joined {unique}"},
                               "steps": [{"id": "offer", "send": {"channel": "email",
                                                                  "template": template}}]}],
                   "goal": {"event": "Order Completed", "within": "P14D"}}
        r = await http.post(f"{urls['journey']}/v1/journeys", headers=admin_headers,
                            json=journey)
        assert r.status_code == 201, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys/{key}/publish",
                            headers=admin_headers)
        assert r.status_code == 200, r.text

        async def call(user: str, kind: str, body: dict[str, Any]) -> None:
            r = await http.post(f"{urls['ingest']}/v1/{kind}", auth=write_auth,
                                json={"userId": user, **body})
            assert r.status_code == 200, r.text

        mails = {}
        for user in users.values():
            await call(user, "identify", {"traits": {"email": f"{user}@example.com"}})
            await call(user, "track", {"event": f"Joined {unique}"})
        for name, user in users.items():
            mails[name] = await inbox.wait_for_mail(f"{user}@example.com", "Welcome offer")

        def tracking(mail: Any, kind: str) -> str:
            html = mail.get_body(("html",)).get_content()
            found = re.search(rf'(https?://[^"\'\s>]+/t/{kind}/[^"\'\s>]+)', html)
            assert found, html
            return urls["messaging"] + urlsplit(found.group(1)).path

        # The clicker opens and clicks, the opener only opens, the silent one does nothing.
        assert (await http.get(tracking(mails["clicker"], "o"))).status_code == 200
        assert (await http.get(tracking(mails["clicker"], "c"))).status_code == 302
        assert (await http.get(tracking(mails["opener"], "o"))).status_code == 200

        async def kpis() -> dict[str, Any]:
            r = await http.get(f"{urls['profile']}/v1/kpis", headers=admin_headers,
                               params={"journey": key})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        async def until(check: Any, timeout: float = 30) -> dict[str, Any]:
            for _ in range(int(timeout * 5)):
                body = await kpis()
                if check(body["totals"]):
                    return body
                await asyncio.sleep(0.2)
            raise AssertionError(body["totals"])

        # The opens and clicks have reached profile before the orders are placed.
        await until(lambda t: t["communication"]["unique_clicks"] == 1
                    and t["communication"]["unique_opens"] == 2)
        for name, order_id, total in (("clicker", "o-1", 100), ("opener", "o-2", 40),
                                      ("silent", "o-3", 25)):
            await call(users[name], "track", {"event": "Order Completed", "properties": {
                "order_id": f"{order_id}-{unique}", "total": total}})
        await call(users["clicker"], "track", {"event": "Order Completed", "properties": {
            "order_id": f"o-1-{unique}", "total": 100}})  # retried by the shop
        await call(users["clicker"], "track", {"event": "Order Refunded", "properties": {
            "order_id": f"o-1-{unique}", "total": 30}})
        # o-1 -> the click, o-2 -> the open (within a day), o-3: neither. 100 + 40 - 30.
        got = await until(lambda t: t["attribution"]["orders"] == 2
                          and t["attribution"]["revenue"] == 110.0)
        c = got["totals"]["communication"]
        # Plain SMTP reports no delivery: delivered = sent - bounced = 3.
        assert (c["sent"], c["delivered"], c["unique_opens"], c["unique_clicks"],
                c["reached"]) == (3, 3, 2, 1, 3)
        assert (c["open_rate"], c["click_rate"], c["click_to_open"], c["bounce_rate"]) == \
            (0.666667, 0.333333, 0.5, 0.0)
        assert got["by"]["journey"][key]["attribution"]["revenue"] == 110.0
        assert got["by"]["template"][template]["attribution"]["orders"] == 2
        uplift = got["totals"]["uplift"][key]
        assert got["warnings"] == [] and uplift["holdout_size"] == 0
        assert uplift["treated"]["customers"] == 3
