"""`touchpoint demo`: one email journey end to end, through the public APIs only."""

from __future__ import annotations

import secrets
import time
from typing import Any

from rich.console import Console

from touchpoint.client import Client, stats_table

TEMPLATE_KEY = "demo-welcome"
JOURNEY_KEY = "demo-welcome"
EVENT = "Demo Signed Up"

# Messaging renders with strict Liquid: use only what the demo's identify call sets.
TEMPLATE = {
    "channel": "email",
    "subject": "Welcome, {{ profile.traits.first_name }}!",
    "text": "Hi {{ profile.traits.first_name }},\n\nthanks for signing up.\n\n-- Touchpoint demo",
    "html": "<p>Hi {{ profile.traits.first_name }},</p><p>thanks for signing up.</p>"
            "<p>-- Touchpoint demo</p>",
}

JOURNEY: dict[str, Any] = {
    "key": JOURNEY_KEY,
    "name": "Demo: welcome email",
    "description": "Created by `touchpoint demo`.",
    "stages": [{
        "key": "signed-up",
        "name": "Signed up",
        "enter": {"event": EVENT},
        "steps": [{"id": "welcome", "send": {"channel": "email", "template": TEMPLATE_KEY}}],
    }],
}
PENDING = {"sending", "queued", "pending"}


def run_demo(client: Client, console: Console, wait_seconds: float = 30.0) -> None:
    """Template, journey, identify + track, then poll until the message shows up."""
    suffix = secrets.token_hex(3)
    user_id, email = f"demo-{suffix}", f"demo+{suffix}@example.com"

    console.print(f"[bold]1/4[/] template [cyan]{TEMPLATE_KEY}[/] (messaging)")
    client.put_template(TEMPLATE_KEY, TEMPLATE)
    console.print(f"[bold]2/4[/] journey [cyan]{JOURNEY_KEY}[/] (journey): on '{EVENT}', "
                  f"send the {TEMPLATE_KEY} email")
    client.save_journey(JOURNEY)
    version = client.publish_journey(JOURNEY_KEY).get("published_version")
    console.print(f"     published as version {version}")
    earlier = {m["id"] for m in _demo_messages(client)}

    console.print(f"[bold]3/4[/] identify {user_id} <{email}>, then track '{EVENT}' (ingest)")
    client.send_call("identify", {"userId": user_id,
                                  "traits": {"email": email, "first_name": "Ada"}})
    client.send_call("track", {"userId": user_id, "event": EVENT,
                               "properties": {"source": "touchpoint demo"}})

    console.print("[bold]4/4[/] waiting for profile -> journey -> messaging ...")
    started = time.monotonic()
    message: dict[str, Any] | None = None
    while time.monotonic() - started < wait_seconds:
        fresh = [m for m in _demo_messages(client) if m["id"] not in earlier]
        message = fresh[0] if fresh else None
        if message is not None and message.get("status") not in PENDING:
            break
        time.sleep(0.25)
    elapsed = time.monotonic() - started

    console.print(stats_table(client.journey_stats(JOURNEY_KEY)))
    if message is None:
        console.print(f"[bold red]no message after {wait_seconds:.0f}s.[/] Look at the "
                      "journey and messaging logs, and at `touchpoint topics tail dlq`.")
        return
    status = message.get("status")
    console.print(f"message {message['id']}: [bold]{status}[/] after {elapsed:.2f}s"
                  + (f" ({message['error']})" if message.get("error") else ""))
    if status == "sent":
        console.print("The email went to the SMTP server of TOUCHPOINT_SMTP_URL "
                      "(default smtp://127.0.0.1:1025); an SMTP catcher there shows it.")
    elif status == "failed":
        console.print("Is an SMTP server listening at TOUCHPOINT_SMTP_URL (default "
                      "smtp://127.0.0.1:1025)? For a local catcher: "
                      "`python -m aiosmtpd -n -l 127.0.0.1:1025`, then run the demo again.")


def _demo_messages(client: Client) -> list[dict[str, Any]]:
    return [m for m in client.list_messages(limit=50) if m.get("template") == TEMPLATE_KEY]
