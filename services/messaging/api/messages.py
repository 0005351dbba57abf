"""The message log: per profile, journey, status; one message's content for support."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from services.messaging.api.deps import EngineDep
from services.messaging.api.schemas import MessageOut, MessagePage
from services.messaging.store.messages import (
    lock_for_resend,
    mark_for_resend,
    message_filter,
    message_page,
    message_row,
)
from shared.contracts.send import ChannelName
from shared.http.auth import AdminDep
from shared.http.contracts import answers, problems
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["messages"])
Status = Literal["queued", "sending", "sent", "delivered", "bounced", "failed", "suppressed",
                 "unknown", "retrying", "expired"]
DUPLICATE_RISK = ("A message left 'unknown' may already have reached the recipient (the "
                  "provider call was in flight when the service stopped): resending it can "
                  "deliver it twice. Emails keep their Message-ID, which some mailbox "
                  "providers use to drop the copy; SMS and push have no such safeguard.")
SUMMARY = ("id", "profile_id", "channel", "template", "template_version", "status", "error",
           "journey", "provider", "created_at", "sent_at", "delivered_at", "opened_at",
           "clicked_at", "retry_at")


@router.get("/messages", responses=answers(MessagePage))
async def list_messages(engine: EngineDep, principal: AdminDep, profile_id: str | None = None,
                        journey: str | None = None, status: Status | None = None,
                        channel: ChannelName | None = None,
                        limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """The message log, newest first, filtered by profile, journey key, status, channel."""
    where = message_filter(principal.workspace_id, profile_id=profile_id, journey=journey,
                           status=status, channel=channel)
    async with engine.connect() as conn:
        rows = await message_page(conn, where, SUMMARY, limit=limit, offset=offset)
    return {"items": [dict(r) for r in rows], "limit": limit, "offset": offset}


@router.get("/messages/{message_id}", responses=answers(MessageOut, 404))
async def get_message(engine: EngineDep, principal: AdminDep,
                      message_id: str = Path(min_length=1, max_length=36)) -> dict[str, Any]:
    """One message with its rendered content, for support. After the profile's erasure the
    recipient and content are gone (`erased_at` says when)."""
    async with engine.connect() as conn:
        row = await message_row(conn, principal.workspace_id, message_id)
    if row is None:
        raise Problem(404, "Not found", f"no message '{message_id}'")
    return {**{c: row[c] for c in SUMMARY}, "idempotency_key": row["idempotency_key"],
            "recipient": row["recipient"], "content": row["content"],
            "provider_message_id": row["provider_message_id"], "erased_at": row["erased_at"],
            "attempts": row["attempts"]}


class Resent(BaseModel):
    id: str
    status: Literal["retrying"]
    previous_status: Literal["unknown", "failed"]
    duplicate_risk: str


@router.post("/messages/{message_id}/resend", status_code=202, response_model=Resent,
             responses=problems(404, 409))
async def resend_message(engine: EngineDep, principal: AdminDep,
                         message_id: str = Path(min_length=1, max_length=36)) -> Resent:
    """Send an `unknown` or `failed` message again (the retry sweeper picks it up within a
    second); an `unknown` one may be delivered twice."""
    async with engine.begin() as conn:
        row = await lock_for_resend(conn, principal.workspace_id, message_id)
        if row is None:
            raise Problem(404, "Not found", f"no message '{message_id}'")
        status, kept = row
        if status not in ("unknown", "failed"):
            raise Problem(409, "Not resendable", f"message is '{status}'; only 'unknown' and "
                          "'failed' messages can be resent", field="status")
        if not kept:
            raise Problem(409, "Not resendable", "the send command was not kept (the message "
                          "failed before this version, its profile was erased, or it "
                          "was a test send)",
                          field="command")
        await mark_for_resend(conn, message_id)
    return Resent(id=message_id, status="retrying", previous_status=status,
                  duplicate_risk=DUPLICATE_RISK)
