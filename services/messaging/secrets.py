"""Keys derived from the messaging secret: one for credentials at rest, one for link tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"touchpoint-messaging",
                info=purpose).derive(secret.encode())


class SecretBox:
    """Encrypts provider credentials (Fernet: AES-128-CBC + HMAC) and signs tracking tokens."""

    def __init__(self, secret: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"credentials")))
        self.token_key = _derive(secret, b"tracking-tokens")

    def seal(self, values: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(values).encode())

    def open(self, sealed: bytes) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken as exc:
            raise ValueError("credentials cannot be decrypted: was the messaging secret "
                             "key changed?") from exc
        return opened


def hint(value: Any) -> str:
    """What the API shows of a secret: its last 4 characters at most."""
    text = str(value)
    return "****" + (text[-4:] if len(text) >= 12 else "")
