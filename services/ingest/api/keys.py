"""Write-key management (admin API): create, list, revoke the workspace's write keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import func, insert, select, update

from services.ingest.api.schemas import CreatedWriteKey, NewWriteKey, WriteKeyOut, WriteKeyPage
from services.ingest.tables import api_keys
from shared.auth import hash_key, new_key
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.deps import EngineDep
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/keys", tags=["write keys"])
ID_LENGTH = 16  # the key's public id: a prefix of its SHA-256, never the key itself
KeyId = Annotated[str, Path(pattern=f"^[0-9a-f]{{{ID_LENGTH}}}$",
                            description="The key's id, as listed.")]


def _view(row: Any) -> dict[str, Any]:
    return {"id": row.key_hash[:ID_LENGTH], "kind": row.kind, "name": row.name,
            "workspace_id": row.workspace_id, "created_at": row.created_at,
            "revoked_at": row.revoked_at}


def _forget(request: Request) -> None:
    # This replica sees the change at once; other replicas within the key ring's 10 s TTL.
    request.app.state.runtime.keyring.forget()


@router.post("", status_code=201, responses=answers(CreatedWriteKey, status=201))
async def create_write_key(body: NewWriteKey, request: Request, engine: EngineDep,
                           principal: AdminDep) -> dict[str, Any]:
    """Create a write key for the admin key's workspace. The key is shown only in this answer."""
    key = new_key("write")
    stmt = insert(api_keys).values(key_hash=hash_key(key), kind="write",
                                   workspace_id=principal.workspace_id,
                                   name=body.name).returning(api_keys)
    async with engine.begin() as conn:
        row = (await conn.execute(stmt)).one()
    _forget(request)
    return {**_view(row), "key": key}


@router.get("", responses=answers(WriteKeyPage))
async def list_write_keys(engine: EngineDep, principal: AdminDep, limit: Limit = 100,
                          offset: Offset = 0) -> dict[str, Any]:
    """The workspace's write keys, newest first (ids and names; keys are never shown again)."""
    t = api_keys
    stmt = (select(t).where(t.c.workspace_id == principal.workspace_id, t.c.kind == "write")
            .order_by(t.c.created_at.desc(), t.c.key_hash).limit(limit).offset(offset))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {"items": [_view(r) for r in rows], "limit": limit, "offset": offset}


@router.post("/{key_id}/revoke", responses=answers(WriteKeyOut, 404))
async def revoke_write_key(key_id: KeyId, request: Request, engine: EngineDep,
                           principal: AdminDep) -> dict[str, Any]:
    """Revoke a write key: tracking calls with it get 401. Idempotent."""
    t = api_keys
    scope = (t.c.workspace_id == principal.workspace_id, t.c.kind == "write",
             t.c.key_hash.startswith(key_id, autoescape=True))
    async with engine.begin() as conn:
        await conn.execute(update(t).where(*scope, t.c.revoked_at.is_(None))
                           .values(revoked_at=func.now()))
        row = (await conn.execute(select(t).where(*scope))).first()
    if row is None:
        raise Problem(404, "Not found", f"no write key {key_id} in this workspace")
    _forget(request)
    return _view(row)

