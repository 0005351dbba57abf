"""Keys derived from the installation secrets: credentials at rest and link tokens.

The first secret is current: it encrypts and signs. The others are earlier secrets kept after
a rotation, so credentials stored and links mailed before it still open and verify.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"touchpoint-messaging",
                info=purpose).derive(secret.encode())


class SecretBox:
    """Encrypts provider credentials (Fernet: AES-128-CBC + HMAC) and signs tracking tokens."""

    def __init__(self, secrets: str | Sequence[str]) -> None:
        ordered = [secrets] if isinstance(secrets, str) else list(secrets)
        if not ordered:
            raise ValueError("at least one secret is needed")
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(_derive(s, b"credentials")))
                                    for s in ordered])
        # token_key signs; token_keys (current first) verify.
        self.token_keys = tuple(_derive(s, b"tracking-tokens") for s in ordered)
        self.token_key = self.token_keys[0]

    def seal(self, values: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(values).encode())

    def open(self, sealed: bytes) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken as exc:
            raise ValueError("credentials cannot be decrypted: was TOUCHPOINT_SECRET changed "
                             "without keeping the old one in TOUCHPOINT_SECRET_PREVIOUS?") from exc
        return opened


def hint(value: Any) -> str:
    """What the API shows of a secret: its last 4 characters at most."""
    text = str(value)
    return "****" + (text[-4:] if len(text) >= 12 else "")
