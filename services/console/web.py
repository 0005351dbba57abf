"""What every page shares: templates, the signed-in session, CSRF, the cookie's refresh."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from services.console.api import Api, ApiProblem, Unauthorized
from services.console.session import COOKIE, Session, SessionCodec

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)


class NotSignedIn(Exception):
    """No valid session: 303 to the sign-in page."""


class BadCsrf(Exception):
    """A form without the session's CSRF token."""


def secure(request: Request) -> bool:
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https")


def set_session_cookie(response: HTMLResponse | RedirectResponse, request: Request,
                       session: Session) -> None:
    codec: SessionCodec = request.app.state.codec
    response.set_cookie(COOKIE, codec.dump(session), httponly=True, samesite="lax",
                        secure=secure(request), path="/", max_age=int(codec.idle_s))


async def signed_in(request: Request) -> Session:
    """The session of a signed-in user; the key re-checked against the API when due."""
    codec: SessionCodec = request.app.state.codec
    session = codec.load(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn()
    now = time.time()
    if now - session.checked_at >= request.app.state.settings.console_recheck_s:
        if not await key_works(request.app.state.api, session.key):
            raise NotSignedIn()
        session.checked_at = now
    session.last_seen = now
    request.state.session = session
    return session


SessionDep = Annotated[Session, Depends(signed_in)]


async def key_works(api: Api, key: str) -> bool:
    """Is this an admin key? Profile answers for the stack (each service seeds the same
    bootstrap keys); a key another service refuses signs out on the page that calls it."""
    try:
        await api.call(key, "workspace")
    except (Unauthorized, ApiProblem):
        return False
    return True


def check_csrf(session: Session, token: str | None) -> None:
    if not session.csrf_ok(token):
        raise BadCsrf()


def render(request: Request, name: str, context: dict[str, Any] | None = None,
           status_code: int = 200) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    ctx = {"session": session, "csrf": session.csrf if session else "",
           "path": request.url.path} | (context or {})
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    if session is not None:
        set_session_cookie(response, request, session)
    return response


def redirect(request: Request, url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    session: Session | None = getattr(request.state, "session", None)
    if session is not None:
        set_session_cookie(response, request, session)
    return response


def api(request: Request) -> Api:
    found: Api = request.app.state.api
    return found
