"""`Authorization: Bearer <admin key>` for the management APIs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal
from shared.http.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="touchpoint"'}
# auto_error=False: a missing or non-Bearer header is our problem+json 401, not FastAPI's 403.
admin_key = HTTPBearer(auto_error=False, scheme_name="adminKey",
                       description="The workspace's admin key: `Authorization: Bearer <key>`.")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_key)],
) -> Principal:
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <admin key>",
                      headers=_CHALLENGE)
    principal: Principal | None = await request.app.state.runtime.keyring.lookup(token, "admin")
    if principal is None:
        raise Problem(401, "Unauthorized", "unknown or revoked admin key", headers=_CHALLENGE)
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
