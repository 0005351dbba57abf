"""Send-time checks and rendering of one message: consent, suppression, template, links."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from services.messaging.domain.addresses import address_hash
from services.messaging.domain.consent import suppression_reason
from services.messaging.domain.filters import RenderOptions
from services.messaging.domain.links import track_links
from services.messaging.domain.plain_text import html_to_text
from services.messaging.domain.render import (
    Rendered,
    RenderError,
    render,
    template_data,
    with_unsubscribe_footer,
)
from services.messaging.message import Prepared
from services.messaging.parts import Messaging
from services.messaging.providers.base import Outbound
from services.messaging.store import SendState
from shared.contracts.send import SendCommand


def prepare(m: Messaging, cmd: SendCommand, message_id: str, state: SendState,
            addresses: list[str], *, codes: dict[str, str] | None = None,
            test: bool | None = None) -> Prepared:
    """Consent, suppression and rendering, with the state loaded for the batch. Without
    `codes`, a template's `code` filters only name their pools (`Prepared.pools`): the
    codes are handed out, and the message rendered again, by `codes.hand_out_codes`."""
    p = Prepared(cmd, message_id, addresses=addresses, codes=codes, test=test)
    channel, ws = cmd.channel.value, cmd.workspace_id
    tpl = state.templates.get((ws, cmd.template))
    p.template_version = tpl["version"] if tpl is not None else None
    if tpl is None and channel != "webhook":
        p.verdict = ("failed", f"template '{cmd.template}' does not exist")
        return p
    if tpl is not None and tpl["channel"] != channel:
        p.verdict = ("failed", f"template '{cmd.template}' is for {tpl['channel']}, not {channel}")
        return p
    if not addresses:
        p.verdict = ("failed", f"no {channel} address for this profile")
        return p
    live = [a for a in addresses
            if (ws, channel, address_hash(channel, a)) not in state.dead]
    profile = cmd.context.get("profile") or {}
    topic = tpl["topic"] if tpl is not None else None
    reason = suppression_reason(
        channel=channel, category=tpl["category"] if tpl is not None else "transactional",
        topic=topic, stored=state.consent.get((ws, cmd.profile_id), {}),
        snapshot=_bools(profile.get("consent")),
        undeliverable=not live or _bools(profile.get("reachable")).get(channel) is False)
    if reason:
        p.verdict = ("suppressed", reason)
        return p
    unsubscribe = m.links.unsubscribe_url(ws, cmd.profile_id, message_id, channel, topic)
    data = template_data(cmd.context, message_id=message_id, unsubscribe_url=unsubscribe)
    options = render_options(m.settings, profile, codes)
    try:
        rendered = (render(subject=tpl["subject"], html=tpl["html"], text=tpl["text"], data=data,
                           strict=tpl["strict"], snippets=state.snippets.get(ws), options=options)
                    if tpl is not None else Rendered(None, None, None))
    except RenderError as exc:
        p.verdict = ("failed", str(exc) if exc.limit else f"render: {exc}")
        return p
    p.pools = options.pools
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if channel == "email" and tpl is not None:
        if rendered.html and not tpl["text"]:  # a text alternative, as mailboxes expect
            rendered = replace(rendered, text=html_to_text(rendered.html))
        rendered = with_unsubscribe_footer(rendered, url=unsubscribe,
                                           sources=(tpl["html"], tpl["text"]))
        if rendered.html and m.settings.messaging_track_links:
            links = m.links
            rendered = Rendered(rendered.subject, track_links(
                rendered.html, open_url=links.open_url(ws, cmd.profile_id, message_id),
                click_url=lambda u: links.click_url(ws, cmd.profile_id, message_id, u),
                keep=lambda u: u == unsubscribe), rendered.text)
        # RFC 8058 one-click unsubscribe: mailbox providers POST to this URL.
        headers = {"List-Unsubscribe": f"<{unsubscribe}>",
                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    elif channel == "webhook" and tpl is None:
        extra = {"type": "touchpoint.send", "message_id": message_id,
                 "workspace_id": ws, "profile_id": cmd.profile_id,
                 "journey": cmd.journey.model_dump(mode="json") if cmd.journey else None,
                 "data": {k: cmd.context.get(k) for k in ("profile", "event", "journey")}}
    p.content = {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}
    if extra:
        p.content["body"] = json.dumps(extra)
    p.outbound = [Outbound(message_id=message_id, workspace_id=ws, to=a,
                           subject=rendered.subject, html=rendered.html, text=rendered.text,
                           headers=headers, data=extra) for a in live]
    return p


def render_options(settings: Any, profile: dict[str, Any],
                   codes: dict[str, str] | None = None) -> RenderOptions:
    """Currency and zone for `money` and `date`: the customer's (snapshot `currency`,
    `timezone`), else the workspace's (profile conventions, carried in the snapshot as
    `workspace_currency` / `workspace_timezone`), else messaging's settings."""
    currency = profile.get("currency") or profile.get("workspace_currency")
    zone = profile.get("timezone") or profile.get("workspace_timezone")
    return RenderOptions(
        currency=currency if isinstance(currency, str) and currency else
        settings.messaging_currency,
        timezone=zone if isinstance(zone, str) and zone else settings.messaging_timezone,
        codes=codes)


def _bools(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, bool)}


def recipient_addresses(cmd: SendCommand) -> list[str]:
    """The recipient's addresses on the command's channel: the command's own, else the
    profile snapshot's (push: every token, once each)."""
    profile = cmd.context.get("profile") or {}
    match cmd.channel.value:
        case "email":
            found = cmd.to.email or profile.get("email")
        case "sms":
            found = cmd.to.phone or profile.get("phone")
        case "push":
            return list(dict.fromkeys(cmd.to.push_tokens or profile.get("push_tokens") or []))
        case _:
            found = cmd.to.url
    return [found] if isinstance(found, str) and found else []
