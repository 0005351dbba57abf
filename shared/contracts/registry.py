"""One table of every topic: short name, model, version, example file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event
from shared.contracts.profile import ProfileChange, ProfileEvent
from shared.contracts.send import SendCommand

EXAMPLES = Path(__file__).parent / "examples"


@dataclass(frozen=True)
class TopicContract:
    name: str  # short name; the full topic is settings.topic(name)
    model: type[BaseModel] | None
    version: int
    description: str

    @property
    def example_path(self) -> Path:
        return EXAMPLES / f"{self.name}.v{self.version}.json"

    def schema_name(self) -> str:
        return f"{self.name}.v{self.version}.schema.json"


TOPICS: dict[str, TopicContract] = {
    c.name: c
    for c in (
        TopicContract("events", Event, 1, "Accepted tracking calls from ingest."),
        TopicContract("profile-events", ProfileEvent, 1, "Events with their resolved profile."),
        TopicContract("profile-changes", ProfileChange, 1,
                      "Merges, erasures, stage/segment moves."),
        TopicContract("send-commands", SendCommand, 1, "Journey asks messaging to deliver."),
        TopicContract("delivery-events", DeliveryEvent, 1, "What happened to each message."),
        TopicContract("dlq", None, 1, "Poison messages, original bytes, error in headers."),
    )
}


def contract_for(name: str) -> TopicContract:
    return TOPICS[name]
