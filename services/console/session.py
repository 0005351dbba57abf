"""The session cookie: the admin key encrypted and signed (Fernet), a CSRF token bound to the
session, and the times that drive the idle expiry and the periodic re-check of the key.

Nothing is kept server-side, so any number of console replicas serve the same sessions.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "tp_console"
PRE_CSRF_COOKIE = "tp_console_csrf"  # double-submit token of the sign-in form only


@dataclass
class Session:
    key: str
    csrf: str
    last_seen: float
    checked_at: float

    @classmethod
    def new(cls, key: str, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        return cls(key=key, csrf=secrets.token_urlsafe(24), last_seen=now, checked_at=now)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class SessionCodec:
    def __init__(self, secret: bytes, idle_s: float) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(secret[:32].ljust(32, b"\0")))
        self.idle_s = idle_s

    def dump(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def load(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session, or None when absent, tampered with or idle for too long."""
        if not cookie:
            return None
        try:
            data = json.loads(self._fernet.decrypt(cookie.encode()))
            session = Session(**data)
        except (InvalidToken, ValueError, TypeError):
            return None
        now = time.time() if now is None else now
        if now - session.last_seen > self.idle_s:
            return None
        return session
