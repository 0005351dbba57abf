"""Settings: one base class read from `TOUCHPOINT_*` env vars; each service subclasses it."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("ingest", "profile", "journey", "messaging")
DEFAULT_PORTS = {"ingest": 8001, "profile": 8002, "journey": 8003, "messaging": 8004}
# Apps: processes `serve` runs that are not Kafka services (no database, topics or consumers
# of their own): the web console, on the port before ingest's. Kept apart from SERVICES,
# which code iterates for migrations, topics and API discovery.
APPS = ("console",)
APP_PORTS = {"console": 8000}


class Settings(BaseSettings):
    """What every service needs. Fails fast on unsafe values outside `dev`."""

    model_config = SettingsConfigDict(env_prefix="TOUCHPOINT_", extra="ignore")

    @classmethod
    def from_base(cls, settings: Settings) -> Self:
        """A service's own settings class (a subclass) from the shared settings: explicit
        shared values win; the service's own fields come from the environment."""
        if isinstance(settings, cls):
            return settings
        return cls(**settings.model_dump())

    env: Literal["dev", "test", "prod"] = "dev"
    host: str = Field(default="127.0.0.1", description="Interface `serve` listens on.")
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/touchpoint"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "touchpoint."
    topic_partitions: int = Field(default=6, ge=1, le=1024)
    topic_replication: int = Field(default=1, ge=1, le=10)
    bootstrap_write_key: str | None = None
    bootstrap_admin_key: str | None = None
    default_workspace: str = "default"
    smtp_url: str = "smtp://127.0.0.1:1025"
    email_from: str = "Touchpoint <no-reply@touchpoint.localhost>"
    log_level: str = "INFO"
    # Consumers: keep fetch waits small (latency budget is ~100 ms end to end).
    consumer_fetch_max_wait_ms: int = Field(default=20, ge=0, le=5000)
    # A restarted member waits for the old one's session to expire (Tansu ignores LeaveGroup).
    consumer_session_timeout_ms: int = Field(default=10_000, ge=3_000, le=300_000)
    consumer_max_records: int = Field(default=500, ge=1, le=10_000)
    producer_linger_ms: int = Field(default=1, ge=0, le=1000)
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)
    # Retention (shared/db/retention.py). Inbox ids must outlive any redelivery, so longer
    # than a record can stay in a topic: Kafka deletes whole segments once their newest
    # record is past retention.ms (7 days by default), and a segment rolls after segment.ms
    # (7 days by default), so a record can be read up to ~14 days after it was written.
    inbox_retention_hours: float = Field(
        default=336, ge=1, le=24 * 3650,
        description="How long a consumer remembers an applied message id "
                    "(TOUCHPOINT_INBOX_RETENTION_HOURS).")
    retention_interval_s: float = Field(
        default=3600, ge=1, le=86_400,
        description="How often old rows are pruned (TOUCHPOINT_RETENTION_INTERVAL_S).")

    @field_validator("database_url")
    @classmethod
    def _asyncpg_only(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("TOUCHPOINT_DATABASE_URL must start with postgresql+asyncpg://")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("TOUCHPOINT_TOPIC_PREFIX must be non-empty and have no spaces")
        return value

    def model_post_init(self, _context: object) -> None:
        if self.env == "prod":
            for name in ("bootstrap_admin_key", "bootstrap_write_key"):
                key = getattr(self, name)
                if key is not None and len(key) < 24:
                    raise ValueError(
                        f"TOUCHPOINT_{name.upper()} is too short for prod (>= 24 chars)")

    def topic(self, name: str) -> str:
        """Full topic name for a short name such as `events` -> `touchpoint.events`."""
        return f"{self.topic_prefix}{name}"
