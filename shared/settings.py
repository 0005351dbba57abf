"""Settings: one base class read from `TOUCHPOINT_*` env vars; each service subclasses it."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public values: each is accepted only in its own environment (model_post_init).
DEV_SECRET = "touchpoint-dev-only-secret-change-me-not-for-real-mail"
TEST_SECRET = "touchpoint-test-only-secret-never-used-outside-tests"
SERVICES = ("ingest", "profile", "journey", "messaging")
DEFAULT_PORTS = {"ingest": 8001, "profile": 8002, "journey": 8003, "messaging": 8004}
# Apps: processes `serve` runs that are not Kafka services (no database, topics or consumers
# of their own): the web console, on the port before ingest's. Kept apart from SERVICES,
# which code iterates for migrations, topics and API discovery.
APPS = ("console",)
APP_PORTS = {"console": 8000}


class Settings(BaseSettings):
    """What every service needs. Fails fast on unsafe values outside `dev`."""

    model_config = SettingsConfigDict(env_prefix="TOUCHPOINT_", extra="ignore",
                                      populate_by_name=True)

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
    # The installation secret: signs link and unsubscribe tokens, encrypts provider
    # credentials. `touchpoint up` generates one (.touchpoint/secret); elsewhere it is required
    # outside dev. TOUCHPOINT_MESSAGING_SECRET_KEY is its former name, still read.
    secret: str | None = Field(
        default=None, validation_alias=AliasChoices("TOUCHPOINT_SECRET",
                                                    "TOUCHPOINT_MESSAGING_SECRET_KEY"),
        description="Installation secret (TOUCHPOINT_SECRET), >= 32 chars outside dev.")
    secret_previous: str = Field(
        default="", description="Earlier secrets, comma-separated, newest first "
                                "(TOUCHPOINT_SECRET_PREVIOUS): they still verify and decrypt, "
                                "never sign.")
    # Failed authentication per source address: a token bucket of `burst` failures that
    # refills at `per_second`; a source with an empty bucket gets 429 without key lookup.
    auth_failure_burst: int = Field(default=20, ge=1, le=100_000)
    auth_failure_per_second: float = Field(default=1.0, gt=0, le=100_000)
    # Consumers: keep fetch waits small (latency budget is ~100 ms end to end).
    consumer_fetch_max_wait_ms: int = Field(default=20, ge=0, le=5000)
    consumer_fetch_idle_wait_ms: int = Field(
        default=100, ge=0, le=5000,
        description="Fetch wait once a consumer has had no records for 2 s (0: always "
                    "consumer_fetch_max_wait_ms); the first records end it.")
    # While records flow, a poll of fewer than `consumer_linger_records` records waits up
    # to this long for more before its handler runs: at low rates a poll's fixed cost
    # (transaction, commit, outbox publish) dominates, so fuller polls cut CPU per event
    # (docs/performance.md, "Cost per poll").
    consumer_linger_ms: int = Field(
        default=20, ge=0, le=1000,
        description="How long a small poll waits for more records before it is handled, "
                    "while records flow (0: never); adds at most this much per hop.")
    consumer_linger_records: int = Field(default=32, ge=1, le=10_000)
    # A restarted member waits for the old one's session to expire (Tansu ignores LeaveGroup):
    # this bounds recovery after a crash (docs/reliability.md#recovery-after-a-crash).
    consumer_session_timeout_ms: int = Field(default=6_000, ge=3_000, le=300_000)
    # A consumer that dead-letters more than this share of its last `consumer_dlq_window`
    # records (a bad deploy) stops committing and turns /readyz to 503 until restarted.
    consumer_dlq_max_ratio: float = Field(default=0.5, gt=0, le=1)
    consumer_dlq_window: int = Field(default=100, ge=10, le=100_000)
    # Static group membership (KIP-345): a restarted process with the same id takes its old
    # place at once instead of waiting for the old member's session to expire. Must be
    # unique among live processes; `touchpoint serve` sets it to <hostname>:<port>.
    consumer_instance_id: str | None = Field(default=None, max_length=200)
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
    # Topics: how long a record (personal data included) stays; set when a topic is created.
    topic_retention_hours: float = Field(
        default=168, gt=0, le=24 * 3650,
        description="retention.ms of every topic but the DLQ (TOUCHPOINT_TOPIC_RETENTION_HOURS).")
    dlq_retention_hours: float = Field(
        default=168, gt=0, le=24 * 3650,
        description="retention.ms of the DLQ (TOUCHPOINT_DLQ_RETENTION_HOURS).")
    topic_segment_hours: float = Field(
        default=24, gt=0, le=24 * 365,
        description="segment.ms of every topic: a record outlives retention by up to this "
                    "(TOUCHPOINT_TOPIC_SEGMENT_HOURS).")
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
        if self.secret is None and self.env != "prod":
            self.secret = DEV_SECRET if self.env == "dev" else TEST_SECRET
        if self.env == "prod":
            for name in ("bootstrap_admin_key", "bootstrap_write_key"):
                key = getattr(self, name)
                if key is not None and len(key) < 24:
                    raise ValueError(
                        f"TOUCHPOINT_{name.upper()} is too short for prod (>= 24 chars)")
            if self.secret is None or self.secret in (DEV_SECRET, TEST_SECRET) \
                    or len(self.secret) < 32:
                raise ValueError("TOUCHPOINT_SECRET must be set to a generated value "
                                 "(>= 32 chars) in prod: `openssl rand -hex 32`")

    @property
    def secrets(self) -> list[str]:
        """The current secret (signs, encrypts) first, then the earlier ones (verify only)."""
        earlier = [s.strip() for s in self.secret_previous.split(",") if s.strip()]
        return [self.secret or DEV_SECRET, *(s for s in earlier if s != self.secret)]

    def topic(self, name: str) -> str:
        """Full topic name for a short name such as `events` -> `touchpoint.events`."""
        return f"{self.topic_prefix}{name}"
