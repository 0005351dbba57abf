"""Discount code pools: upload a list or generate codes; a template hands one out per
customer with `{{ 'pool-key' | code }}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.messaging.api.deps import EngineDep
from services.messaging.domain.codes import generate_codes, split_upload
from services.messaging.store import codes as store
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["code pools"])
PoolKey = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-.]+$")


class Generate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1, le=100_000)
    prefix: str = Field("", max_length=40, pattern=r"^[A-Za-z0-9_\-]*$")
    length: int = Field(8, ge=6, le=32, description="random characters after the prefix")


class PoolIn(BaseModel):
    """Add codes to the pool (created on first use): `codes` (a list) or `generate`."""

    # One source; an upload holds a code that is not blank (`split_upload` strips them).
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"generate": {"count": 1000, "prefix": "WELCOME-"}}],
        "oneOf": [{"properties": {"codes": {"type": "array"}}, "required": ["codes"]},
                  {"properties": {"generate": {"type": "object"}}, "required": ["generate"]}],
        "allOf": [{"properties": {"codes": {"anyOf": [{"type": "null"}, {
            "type": "array", "contains": {"type": "string", "pattern": r"\S"}}]}}}]})
    codes: list[str] | None = Field(None, max_length=100_000)
    generate: Generate | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PoolIn:
        if (self.codes is None) == (self.generate is None):
            raise ValueError("give either codes or generate")
        if self.codes is not None and any(len(c) > 200 for c in self.codes):
            raise ValueError("a code is at most 200 characters")
        return self


class PoolOut(BaseModel):
    key: str
    total: int
    remaining: int = Field(description="codes not handed out yet")
    added: int | None = None
    duplicates: list[str] | None = Field(
        None, description="codes given twice in the upload or already in the pool (added once)")


@router.put("/code-pools/{key}", response_model=PoolOut, response_model_exclude_none=True)
async def put_code_pool(body: PoolIn, engine: EngineDep, principal: AdminDep,
                        key: str = PoolKey) -> dict[str, Any]:
    """Add uploaded or generated codes to a pool; duplicates are reported, not added twice."""
    ws = principal.workspace_id
    async with engine.begin() as conn:
        await store.ensure_pool(conn, ws, key)
        if body.generate is not None:
            existing = await store.codes_like(conn, ws, key, body.generate.prefix)
            new = generate_codes(body.generate.prefix, body.generate.count,
                                 length=body.generate.length, taken=existing)
            duplicates: list[str] = []
        else:
            new, duplicates = split_upload(body.codes or [])
            if not new:
                raise Problem(400, "Invalid code pool", "codes: no code given",
                              errors=[{"field": "codes", "message": "no code given"}])
        inserted = await store.add_codes(conn, ws, key, new)
        duplicates = sorted(set(duplicates) | {c for c in new if c not in inserted})
        total, remaining = await store.pool_counts(conn, ws, key)
    return {"key": key, "total": total, "remaining": remaining, "added": len(inserted),
            "duplicates": duplicates}


@router.get("/code-pools/{key}", response_model=PoolOut, response_model_exclude_none=True,
            responses=answers(None, 404))
async def get_code_pool(engine: EngineDep, principal: AdminDep,
                        key: str = PoolKey) -> dict[str, Any]:
    """A pool's size and how many codes remain."""
    async with engine.connect() as conn:
        if not await store.pool_exists(conn, principal.workspace_id, key):
            raise Problem(404, "Not found", f"no code pool '{key}'")
        total, remaining = await store.pool_counts(conn, principal.workspace_id, key)
    return {"key": key, "total": total, "remaining": remaining}
