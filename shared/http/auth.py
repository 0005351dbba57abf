"""`Authorization: Bearer <admin key>` for the management APIs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.auth import Principal
from shared.http.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="touchpoint"'}


async def require_admin(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <admin key>",
                      headers=_CHALLENGE)
    principal: Principal | None = await request.app.state.runtime.keyring.lookup(
        token.strip(), "admin")
    if principal is None:
        raise Problem(401, "Unauthorized", "unknown or revoked admin key", headers=_CHALLENGE)
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
