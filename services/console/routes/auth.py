"""Sign-in with the admin key, sign-out."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.api import ServiceDown
from services.console.session import COOKIE, PRE_CSRF_COOKIE, Session
from services.console.web import (
    SessionDep,
    check_csrf,
    key_works,
    redirect,
    secure,
    set_session_cookie,
    templates,
)

router = APIRouter()


def _sign_in_page(request: Request, error: str | None = None,
                  status_code: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(request, "signin.html",
                                          {"csrf": token, "error": error, "session": None},
                                          status_code=status_code)
    response.set_cookie(PRE_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    """The sign-in page (signed in already: the journeys)."""
    if request.app.state.codec.load(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse("/journeys", status_code=303)
    return _sign_in_page(request)


@router.post("/", response_class=HTMLResponse)
async def sign_in(request: Request, admin_key: Annotated[str, Form(max_length=500)] = "",
                  csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Check the admin key against the API and open a session."""
    expected = request.cookies.get(PRE_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _sign_in_page(request, "The form expired; please try again.", 403)
    key = admin_key.strip()
    if not key:
        return _sign_in_page(request, "Enter your admin key.", 400)
    try:
        ok = await key_works(request.app.state.api, key)
    except ServiceDown as exc:
        return _sign_in_page(request, f"Cannot check the key: the {exc.service} service is "
                                      f"not answering ({exc.why}).", 503)
    if not ok:
        return _sign_in_page(request, "That admin key was refused: it is unknown or revoked.",
                             401)
    response = RedirectResponse("/journeys", status_code=303)
    set_session_cookie(response, request, Session.new(key))
    response.delete_cookie(PRE_CSRF_COOKIE, path="/")
    return response


@router.post("/signout")
async def sign_out(request: Request, session: SessionDep,
                   csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """End the session."""
    check_csrf(session, csrf)
    request.state.session = None
    response = redirect(request, "/")
    response.delete_cookie(COOKIE, path="/")
    return response
