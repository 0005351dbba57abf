"""Console settings: where the four services are, and the secret its session cookie uses."""

from __future__ import annotations

import hashlib
import secrets

from pydantic import Field

from shared.settings import SERVICES, Settings


class ConsoleSettings(Settings):
    """`TOUCHPOINT_<SERVICE>_URL` as the CLI reads them; the cookie is encrypted and signed
    with `TOUCHPOINT_CONSOLE_SECRET_KEY`, else a key derived from the installation's secret."""

    ingest_url: str = "http://127.0.0.1:8001"
    profile_url: str = "http://127.0.0.1:8002"
    journey_url: str = "http://127.0.0.1:8003"
    messaging_url: str = "http://127.0.0.1:8004"
    console_secret_key: str | None = Field(default=None, min_length=32)
    console_api_timeout_s: float = Field(default=3.0, gt=0, le=60)
    console_recheck_s: float = Field(default=60.0, ge=1, le=60)
    console_idle_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    def service_urls(self) -> dict[str, str]:
        return {name: str(getattr(self, f"{name}_url")).rstrip("/") for name in SERVICES}

    def cookie_secret(self) -> bytes:
        """32 bytes: the console's own secret, else one derived from the installation's secret
        (`TOUCHPOINT_SECRET`, or `.touchpoint/secret` under `up`), else the bootstrap admin
        key; a random one per process as the last resort (sessions then end with the process)."""
        base = self.console_secret_key or self.secret or self.bootstrap_admin_key
        if not base:
            return secrets.token_bytes(32)
        return hashlib.sha256(b"touchpoint-console-cookie\x00" + str(base).encode()).digest()
