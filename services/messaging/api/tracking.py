"""Public endpoints reached from messages: open pixel, click redirect, unsubscribe, and
provider status webhooks. Tokens are signed; nothing here takes a URL from the request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.messaging import store
from services.messaging.api.deps import EngineDep, MessagingDep, publish
from services.messaging.api.schemas import EmailStatusReport, TwilioStatus
from services.messaging.delivery_events import event_from_row
from services.messaging.domain.tokens import verify_token
from services.messaging.providers.sms import DEAD_NUMBER_CODES
from services.messaging.store.channels import provider_secrets
from services.messaging.store.messages import message_by_provider, message_row
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.http.contracts import answers, form_body, json_body, signed_by
from shared.http.problems import Problem

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])
TWILIO_CALLBACK = {
    **signed_by("twilioSignature", "X-Twilio-Signature",
                "HMAC-SHA1 of URL and form with the channel's Twilio auth token."),
    **form_body(TwilioStatus, {"MessageSid": "SM0123456789abcdef", "MessageStatus": "delivered"}),
}
EMAIL_REPORT = {
    **signed_by("webhookSignature", "webhook-signature",
                "Standard Webhooks signature with the channel's `status_webhook_secret` "
                "(with webhook-id and webhook-timestamp)."),
    **json_body(EmailStatusReport, {"message_id": "3f2c9d0e-6b1a-4c55-9a43-0b7f3c1d2e4f",
                                    "status": "bounced", "reason": "550 5.1.1 no such user"}),
}
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private"}
Token = Path(min_length=10, max_length=8192)


def _token(m: MessagingDep, token: str, kind: str) -> dict[str, Any]:
    payload = verify_token(m.box.token_keys, token, kind=kind)
    if payload is None:
        raise Problem(404, "Not found", "this link is invalid or was altered")
    return payload


async def _engagement(request: Request, engine: EngineDep, t: dict[str, Any], column: str,
                      status: DeliveryStatus, suffix: str = "", **fields: Any) -> None:
    """Record an open or click; a database outage must not break the recipient's click."""
    try:
        async with engine.begin() as conn:
            row, first = await store.touch_message(conn, workspace_id=t["w"],
                                                   message_id=t["m"], column=column)
            ids = []
            if row is not None and (first or suffix):
                ids = await store.emit(conn, request.app.state.settings, [event_from_row(
                    row, status, datetime.now(UTC), suffix=suffix, **fields)])
        await publish(request, ids)
    except Exception:
        log.warning("could not record %s for a message", status.value, exc_info=True)


@router.get("/t/o/{token}.gif", include_in_schema=False)
async def open_pixel(request: Request, engine: EngineDep, m: MessagingDep,
                     token: str = Token) -> Response:
    """Open pixel: the first open of a message emits `opened`."""
    payload = verify_token(m.box.token_keys, token, kind="o")
    if payload is not None:
        await _engagement(request, engine, payload, "opened_at", DeliveryStatus.opened)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/t/c/{token}", include_in_schema=False)
async def click(request: Request, engine: EngineDep, m: MessagingDep,
                token: str = Token) -> RedirectResponse:
    """Click redirect to the URL signed into the token (never one from the request)."""
    payload = _token(m, token, "c")
    url = str(payload.get("u", ""))
    if not url.startswith(("http://", "https://")):
        raise Problem(404, "Not found", "this link is invalid or was altered")
    suffix = ":" + hashlib.sha256(url.encode()).hexdigest()[:12]
    await _engagement(request, engine, payload, "clicked_at", DeliveryStatus.clicked,
                      suffix=suffix, url=url)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width"></head><body style="font-family:sans-serif;
max-width:32em;margin:4em auto"><h1>{title}</h1>{body}</body></html>"""


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(m: MessagingDep, token: str = Token) -> HTMLResponse:
    """The unsubscribe page. GET changes nothing (link scanners follow links); the button
    POSTs to the same URL."""
    payload = _token(m, token, "u")
    what = f"the {escape(payload['t'])} list" if payload.get("t") else \
        f"{escape(payload['c'])} messages"
    body = (f"<p>Stop receiving {what}?</p><form method=post>"
            "<input type=hidden name=List-Unsubscribe value=One-Click>"
            "<button type=submit>Unsubscribe</button></form>")
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body), headers=NO_STORE)


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe(request: Request, engine: EngineDep, m: MessagingDep,
                      token: str = Token) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058) and the page's button: applies at once to later
    sends and emits `unsubscribed` (reason = the scope) so profile records the consent."""
    t = _token(m, token, "u")
    scope = f"topic:{t['t']}" if t.get("t") else str(t["c"])
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await store.record_consent(conn, workspace_id=t["w"], profile_id=t["p"], scope=scope,
                                   subscribed=False, source="unsubscribe-link", at=now)
        row = await message_row(conn, t["w"], t["m"])
        event = (event_from_row(row, DeliveryStatus.unsubscribed, now, reason=scope)
                 if row is not None else
                 DeliveryEvent(id=f"{t['m']}:unsubscribed", workspace_id=t["w"],
                               profile_id=t["p"], message_id=t["m"], channel=t["c"],
                               status=DeliveryStatus.unsubscribed, reason=scope, occurred_at=now))
        ids = await store.emit(conn, request.app.state.settings, [event])
    await publish(request, ids)
    return HTMLResponse(_PAGE.format(title="Unsubscribed",
                                     body="<p>You will not receive these messages any more.</p>"),
                        headers=NO_STORE)


async def _channel_secrets(engine: EngineDep, m: MessagingDep, workspace_id: str,
                           provider: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        sealed = await provider_secrets(conn, workspace_id, provider)
    if sealed is None:
        raise Problem(404, "Not found", f"no {provider} provider in this workspace")
    return m.box.open(sealed)


async def _status_update(request: Request, engine: EngineDep, *, workspace_id: str,
                         provider: str, provider_id: str | None, message_id: str | None,
                         outcome: str, reason: str | None) -> None:
    """delivered / bounced / complained reported by a provider, applied to the message."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        row = (await message_row(conn, workspace_id, message_id) if message_id else
               await message_by_provider(conn, workspace_id, provider, provider_id or ""))
        if row is None:
            raise Problem(404, "Not found", "no such message")
        events: list[DeliveryEvent] = []
        if outcome == "delivered" and row["status"] == "bounced":
            return  # out of order (a bounce is final): the state only moves forward
        if outcome == "delivered":
            await store.touch_message(conn, workspace_id=workspace_id, message_id=row["id"],
                                      column="delivered_at", status="delivered")
            events.append(event_from_row(row, DeliveryStatus.delivered, now))
        elif outcome == "bounced":
            await store.touch_message(conn, workspace_id=workspace_id, message_id=row["id"],
                                      column="updated_at", status="bounced")
            address = (row["recipient"] or "").split(", ")[0] or None
            if address:
                await store.mark_undeliverable(conn, workspace_id=workspace_id,
                                               channel=row["channel"], addresses=[address],
                                               reason=reason or "hard bounce")
            events.append(event_from_row(row, DeliveryStatus.bounced, now,
                                               reason=reason or "hard bounce", address=address))
        elif outcome == "complained":
            await store.record_consent(conn, workspace_id=workspace_id,
                                       profile_id=row["profile_id"], scope=row["channel"],
                                       subscribed=False, source="complaint", at=now)
            events.append(event_from_row(row, DeliveryStatus.complained, now,
                                               reason=reason))
        elif outcome == "failed":
            events.append(event_from_row(row, DeliveryStatus.failed, now,
                                               suffix=":provider", reason=reason))
        ids = await store.emit(conn, request.app.state.settings, events)
    await publish(request, ids)


@router.post("/v1/providers/twilio/status/{workspace_id}", status_code=204,
             responses=answers(None, 401, 404), openapi_extra=TWILIO_CALLBACK)
async def twilio_status(request: Request, engine: EngineDep, m: MessagingDep,
                        workspace_id: str = Path(max_length=64)) -> None:
    """Twilio status callback, checked with X-Twilio-Signature (HMAC-SHA1, auth token)."""
    form = dict(parse_qsl((await request.body()).decode(errors="replace"),
                          keep_blank_values=True))
    secrets = await _channel_secrets(engine, m, workspace_id, "twilio")
    url = f"{m.settings.messaging_public_url}{request.url.path}"
    signed = url + "".join(f"{k}{form[k]}" for k in sorted(form))
    expected = base64.b64encode(hmac.new(str(secrets["auth_token"]).encode(), signed.encode(),
                                         hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-twilio-signature", "")):
        raise Problem(401, "Unauthorized", "X-Twilio-Signature does not match")
    status, code = form.get("MessageStatus", ""), form.get("ErrorCode", "")
    if status == "delivered":
        outcome, reason = "delivered", None
    elif status in ("undelivered", "failed"):
        dead = code.isdigit() and int(code) in DEAD_NUMBER_CODES
        outcome, reason = ("bounced" if dead else "failed"), f"SMS {status} (error {code})"
    else:
        return  # queued / sending / sent: nothing new
    await _status_update(request, engine, workspace_id=workspace_id, provider="twilio",
                         provider_id=form.get("MessageSid"), message_id=None, outcome=outcome,
                         reason=reason)


@router.post("/v1/providers/smtp/status/{workspace_id}", status_code=204,
             responses=answers(None, 401, 404), openapi_extra=EMAIL_REPORT)
async def email_status(request: Request, engine: EngineDep, m: MessagingDep,
                       workspace_id: str = Path(max_length=64)) -> None:
    """Bounce, complaint and delivery reports for email (from the relay or a DSN parser),
    signed in the Standard Webhooks format with the channel's `status_webhook_secret`.
    Body: {"message_id", "status": delivered|bounced|complained, "reason"}."""
    secret = (await _channel_secrets(engine, m, workspace_id, "smtp")).get(
        "status_webhook_secret")
    if not secret:
        raise Problem(404, "Not found", "no status_webhook_secret on the smtp provider")
    raw = await request.body()
    try:
        body = Webhook(secret).verify(raw, dict(request.headers))
    except WebhookVerificationError as exc:
        raise Problem(401, "Unauthorized", f"signature check failed: {exc}") from exc
    except ValueError as exc:  # malformed signature header or a body that is not JSON
        raise Problem(400, "Invalid request", "malformed webhook headers or body") from exc
    status = body.get("status") if isinstance(body, dict) else None
    if status not in ("delivered", "bounced", "complained") or \
            not isinstance(body.get("message_id"), str):
        raise Problem(400, "Invalid request", "need message_id and status "
                      "(delivered|bounced|complained)",
                      errors=[{"field": "status", "message": "delivered|bounced|complained"}])
    await _status_update(request, engine, workspace_id=workspace_id, provider="smtp",
                         provider_id=None, message_id=body["message_id"][:36], outcome=status,
                         reason=str(body.get("reason") or "")[:300] or None)
