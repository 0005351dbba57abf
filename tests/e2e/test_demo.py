"""`touchpoint demo` against a whole stack started in the test: within a short, bounded run
the synthetic shop enters at least six playbooks and their emails reach the SMTP sink.

The four services run in-process with a workspace of their own, so the demo's published
playbooks never meet another test's customers. About 90 s on the shared 2-core machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from rich.console import Console

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from services.messaging.app import create_app as messaging_app
from services.profile.app import create_app as profile_app
from shared.auth import new_key
from shared.settings import Settings
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app
from shared.testing.smtp import Inbox
from touchpoint.client import Client, Target
from touchpoint.demo import run_demo
from touchpoint.demo_dashboard import snapshot
from touchpoint.playbooks import NAMES, load

pytestmark = pytest.mark.integration


@pytest.fixture
async def target(settings: Settings, topics: list[str], unique: str) -> AsyncIterator[Target]:
    admin, write = new_key("admin"), new_key("write")
    mine = settings.model_copy(update={"default_workspace": f"demo-{unique}",
                                       "bootstrap_admin_key": admin,
                                       "bootstrap_write_key": write})
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = {}
        for name, factory in (("ingest", ingest_app), ("profile", profile_app),
                              ("journey", journey_app), ("messaging", messaging_app)):
            urls[name] = await stack.enter_async_context(serve_app(factory(mine)))
            await wait_ready(http, urls[name], timeout=30)
        yield Target(urls=urls, admin_key=admin, write_key=write)


def numbers(target: Target) -> dict:
    with Client(target) as client:
        return snapshot(client)


async def test_a_short_demo_sends_for_at_least_six_playbooks(
        target: Target, smtp: tuple[str, Inbox]) -> None:
    _, inbox = smtp
    before = len(inbox.messages)
    console = Console(record=True, width=140, force_terminal=False)

    def demo() -> dict:
        with Client(target) as client:
            return run_demo(client, console, customers=60, minutes=1.5, seed=17,
                            stack={"mail_catcher": True})

    await asyncio.to_thread(demo)
    out = console.export_text()
    print(out[-6000:])  # the dashboard, in the test's captured output
    assert "history" in out and "published as version 1" in out

    # What the demo set off is still flowing when it stops: on a loaded machine, give the
    # last sends a little time (the usual run has them all by now).
    starts = {(name, key): body["subject"].split("{{")[0].strip()
              for name in NAMES for key, body in load(name).templates.items()}
    deadline = asyncio.get_running_loop().time() + 45
    while True:
        state = await asyncio.to_thread(numbers, target)
        entered = {k for k, row in state["playbooks"].items() if row["entries"]}
        sent = {k for k, row in state["playbooks"].items() if row["sent"]}
        # The emails are in the SMTP sink, addressed to the demo's example.com customers.
        demo_mail = [m for m in inbox.messages[before:] if str(m["To"]).startswith("demo-")
                     and str(m["To"]).endswith("@example.com")]
        books = {name for (name, _), start in starts.items() if any(
            str(m["Subject"]).startswith(start) for m in demo_mail)}
        if min(len(entered), len(sent), len(books)) >= 6:
            break
        assert asyncio.get_running_loop().time() < deadline, (state, books, out[-3000:])
        await asyncio.sleep(2)
