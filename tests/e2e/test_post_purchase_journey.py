"""The issue's example journey through the whole stack, over HTTP and SMTP only.

Storefront calls go to ingest; profile resolves the customer; journey runs the CJM with its
instances per order id; messaging renders and sends. Checked at the SMTP sink and through the
management APIs: one review flow per order, a refund mid-`wait_for` ends its flow at once,
the `where` rule keeps small orders out, and a one-click unsubscribe stops the next send.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import httpx
import pytest

from shared.settings import Settings
from tests.support.servers import serve_all
from tests.support.smtp import Inbox

pytestmark = pytest.mark.integration

TEMPLATES = {
    "review-request": ("How was order {{ event.properties.order_id }}?",
                       "Hi {{ profile.traits.first_name | default: 'there' }}, "
                       "tell us about order {{ event.properties.order_id }}."),
    "review-thanks": ("Thanks for your review", "Thank you, {{ profile.traits.first_name }}."),
    "review-nudge": ("A quick reminder", "Still time to review {{ event.properties.order_id }}."),
}


def journey_document(key: str) -> dict:
    """The issue's example, with durations a test can wait for and every step on email."""
    return {
        "key": key,
        "name": "Review request after purchase",
        "instance_key": "event.properties.order_id",
        "stages": [
            {"key": "purchased",
             "enter": {"event": "Order Completed",
                       "where": {"field": "event.properties.total", "op": "gte", "value": 50}},
             "steps": [
                 {"id": "settle", "wait": "PT1S"},
                 {"id": "ask", "send": {"channel": "email", "template": "review-request"}},
                 {"id": "listen", "wait_for": {"event": "Review Submitted", "timeout": "PT4S",
                                               "then": "thanks", "else": "nudge"}},
                 {"id": "nudge", "send": {"channel": "email", "template": "review-nudge"},
                  "next": "end"},
                 {"id": "thanks", "send": {"channel": "email", "template": "review-thanks"}},
             ]},
            {"key": "reviewed", "enter": {"event": "Review Submitted"}},
        ],
        "exit_when": [{"event": "Order Refunded"}],
        "goal": {"event": "Review Submitted", "within": "P14D"},
        "reentry": "after_exit",
        "holdout_percent": 0,
        "frequency_cap": {"email": {"max": 20, "per": "P7D"}},
    }



async def test_post_purchase_review_journey_end_to_end(
    settings: Settings, topics: list[str], smtp: tuple[str, Inbox], unique: str,
    admin_headers: dict[str, str], write_auth: tuple[str, str],
) -> None:
    _, inbox = smtp
    key = f"post-purchase-review-{unique}"
    user = f"buyer-{unique}"
    address = f"{user}@example.com"
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = await serve_all(stack, http, settings)

        for template, (subject, text) in TEMPLATES.items():
            r = await http.put(f"{urls['messaging']}/v1/templates/{template}",
                               headers=admin_headers,
                               json={"channel": "email", "subject": subject, "text": text})
            assert r.status_code == 200, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys", headers=admin_headers,
                            json=journey_document(key))
        assert r.status_code == 201, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys/{key}/publish",
                            headers=admin_headers)
        assert r.status_code == 200, r.text

        async def call(kind: str, body: dict) -> None:
            r = await http.post(f"{urls['ingest']}/v1/{kind}", auth=write_auth,
                                json={"userId": user, **body})
            assert r.status_code == 200 and r.json() == {"success": True}, r.text

        async def order(event: str, order_id: str, total: float = 0) -> None:
            await call("track", {"event": event,
                                 "properties": {"order_id": order_id, "total": total}})

        await call("identify", {"traits": {"email": address, "first_name": "Ada"}})

        # Order 1: asked after the settle wait, then thanked for the review of that order.
        await order("Order Completed", f"o1-{unique}", 80)
        ask1 = await inbox.wait_for_mail(address, f"How was order o1-{unique}?")
        assert "Hi Ada" in ask1.get_body(("plain",)).get_content()
        await call("track", {"event": "Review Submitted",
                             "properties": {"order_id": f"o1-{unique}"}})
        await inbox.wait_for_mail(address, "Thanks for your review")

        # Order 2: asked; refunded while waiting for the review: no nudge ever follows.
        await order("Order Completed", f"o2-{unique}", 60)
        await inbox.wait_for_mail(address, f"How was order o2-{unique}?")
        await order("Order Refunded", f"o2-{unique}")
        # A small order does not match the stage's `where`.
        await order("Order Completed", f"o3-{unique}", 20)
        await asyncio.sleep(6)  # past the 4 s wait_for timeout of order 2
        subjects = sorted(m["Subject"] for m in inbox.to(address))
        assert subjects == sorted([f"How was order o1-{unique}?", "Thanks for your review",
                                   f"How was order o2-{unique}?"])

        r = await http.get(f"{urls['profile']}/v1/profiles/lookup", headers=admin_headers,
                           params={"user_id": user})
        assert r.status_code == 200, r.text
        profile_id = r.json()["id"]
        r = await http.get(f"{urls['journey']}/v1/profiles/{profile_id}/journeys/{key}/trace",
                           headers=admin_headers)
        assert r.status_code == 200, r.text
        assert "Order Refunded" in r.text  # the trace says why order 2's flow ended

        # One-click unsubscribe (RFC 8058) from the first mail stops the next request.
        link = ask1["List-Unsubscribe"].strip("<>")
        assert ask1["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        r = await http.post(f"{urls['messaging']}{urlsplit(link).path}",
                            content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code < 300, r.text
        await order("Order Completed", f"o4-{unique}", 100)
        await asyncio.sleep(4)
        assert not [m for m in inbox.to(address) if f"o4-{unique}" in m["Subject"]]

        r = await http.get(f"{urls['messaging']}/v1/messages", headers=admin_headers,
                           params={"profile_id": profile_id})
        assert r.status_code == 200, r.text
        statuses = [m["status"] for m in r.json()["items"]]
        assert statuses.count("sent") == 3 and len(statuses) == 4, statuses

        r = await http.get(f"{urls['journey']}/v1/journeys/{key}/stats", headers=admin_headers)
        assert r.status_code == 200, r.text
        stats = r.json()
        assert stats["entries"] == 3  # orders 1, 2 and 4; order 3 was too small
        assert stats["transitions"] == [{"from": "purchased", "to": "reviewed", "count": 1}]
        assert sum(n for why, n in stats["exits"].items() if "Order Refunded" in why) == 1
        assert stats["sends"]["purchased"]["thanks"]["sent"] == 1
