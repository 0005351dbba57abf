"""`GET/PUT /v1/policy`: the workspace's contact policy (admin key)."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body
from pydantic import BaseModel, ValidationError

from services.journey.domain.policy import ContactPolicy
from services.journey.policy import store
from shared.http.auth import AdminDep
from shared.http.contracts import json_body
from shared.http.deps import EngineDep
from shared.http.problems import Problem, field_path

router = APIRouter(prefix="/v1", tags=["policy"])
M = TypeVar("M", bound=BaseModel)
_PATH = re.compile(r"^(?:Value error, )?([a-z_]+(?:\.[A-Za-z0-9_]+)*): (.*)$", re.S)


def errors_of(exc: ValidationError) -> list[dict[str, str]]:
    """One `{field, message}` per problem; a cross-field rule names its field in its
    message (`caps.1: ...`), which becomes the field."""
    out = []
    for err in exc.errors():
        loc = field_path(err.get("loc", ()))
        msg = str(err.get("msg"))
        match = _PATH.match(msg)
        if match and (not loc or match.group(1).startswith(loc.split(".")[0])):
            loc, msg = match.group(1), match.group(2)
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append({"field": loc or "body", "message": msg})
    return out


def parse_or_400(model: type[M], body: Any, title: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = errors_of(exc)
        raise Problem(400, title, "; ".join(f"{e['field']}: {e['message']}"
                                            for e in errors[:5]), errors=errors) from exc


class PolicyOut(BaseModel):
    policy: dict[str, Any]
    updated_at: str | None = None
    warnings: list[str] = []


PolicyBody = Annotated[Any, Body(description="A contact policy (see docs/journey.md).")]


@router.get("/policy", response_model=PolicyOut)
async def get_policy(engine: EngineDep, principal: AdminDep) -> PolicyOut:
    """The workspace's contact policy (an empty one when none was saved)."""
    async with engine.connect() as conn:
        row = await store.get_policy(conn, principal.workspace_id)
    if row is None:
        return PolicyOut(policy=ContactPolicy().model_dump(mode="json"))
    return PolicyOut(policy=row["document"], updated_at=row["updated_at"].isoformat())


@router.put("/policy", response_model=PolicyOut, openapi_extra=json_body(ContactPolicy, {
    "caps": [{"channel": "email", "max": 3, "per": "P7D"}],
    "quiet_hours": {"start": "21:00", "end": "09:00"}}))
async def put_policy(body: PolicyBody, engine: EngineDep, principal: AdminDep) -> PolicyOut:
    """Replace the contact policy; it applies to every send from now on."""
    policy = parse_or_400(ContactPolicy, body, "Invalid policy")
    document = policy.model_dump(mode="json", exclude_defaults=False)
    async with engine.begin() as conn:
        row = await store.save_policy(conn, principal.workspace_id, document)
    return PolicyOut(policy=row["document"], updated_at=row["updated_at"].isoformat())
