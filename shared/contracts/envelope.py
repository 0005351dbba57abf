"""The fields every Touchpoint topic message carries."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def utcnow() -> datetime:
    return datetime.now(UTC)


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def json_time(value: datetime) -> str:
    """A datetime as the codec writes it (pydantic's JSON text, `Z` for UTC)."""
    return str(_DATETIME.dump_python(value, mode="json"))


def encode_fast(message: BaseModel) -> bytes:
    """`shared.kafka.codec.encode`'s bytes straight from the model's serializer."""
    return message.__pydantic_serializer__.to_json(message, exclude_none=True)


class Envelope(BaseModel):
    """Base of every topic message.

    `id` is unique per workspace and is what consumers deduplicate on.
    `schema_version` lets a reader pick the model; within a version we only add fields.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(min_length=1, max_length=200, description="Message id, unique per workspace.")
    schema_version: int = Field(default=1, description="Contract version of this message.")
    workspace_id: str = Field(min_length=1, max_length=64)
    produced_at: datetime = Field(default_factory=utcnow)

    def dedupe_id(self) -> str:
        """Inbox key: message ids are only unique within a workspace."""
        return f"{self.workspace_id}:{self.id}"


class JourneyRef(BaseModel):
    """Where a send came from: which journey version, stage, step and instance."""

    model_config = ConfigDict(extra="ignore")

    key: str
    version: int
    stage: str | None = None
    step: str | None = None
    instance: str | None = None


def message_key(workspace_id: str, customer: str) -> bytes:
    """Kafka key `workspace_id:customer`, so one customer's messages stay ordered."""
    return f"{workspace_id}:{customer}".encode()

