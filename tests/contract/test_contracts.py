"""Every example message parses with its topic's model and with every consumer of that topic;
the checked-in JSON Schemas are what the models export."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.journey.consumers import consumers as journey_consumers
from services.messaging.consumers import consumers as messaging_consumers
from services.profile.consumers import consumers as profile_consumers
from shared.contracts import TOPICS
from shared.contracts.export import render_schemas
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(env="test")
CONSUMERS = [spec for table in (profile_consumers, journey_consumers, messaging_consumers)
             for spec in table(SimpleNamespace(settings=SETTINGS))]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [n for n, c in TOPICS.items() if c.model is not None])
def test_examples_parse(name: str) -> None:
    contract = TOPICS[name]
    examples = json.loads(contract.example_path.read_text())
    assert examples, f"{name} needs at least one example"
    for example in examples:
        contract.model.model_validate(example)  # type: ignore[union-attr]


@pytest.mark.parametrize("spec", CONSUMERS, ids=lambda s: s.name)
def test_every_consumer_accepts_its_topic_examples(spec) -> None:
    short = spec.topic.removeprefix(SETTINGS.topic_prefix)
    contract = TOPICS[short]
    assert spec.model is contract.model, f"{spec.name} reads {short} with another model"
    for example in json.loads(contract.example_path.read_text()):
        spec.model.model_validate_json(json.dumps(example))


def test_every_topic_has_a_consumer_or_is_external() -> None:
    consumed = {spec.topic.removeprefix(SETTINGS.topic_prefix) for spec in CONSUMERS}
    assert consumed == {"events", "profile-events", "profile-changes", "send-commands",
                        "delivery-events"}


def test_checked_in_schemas_are_current() -> None:
    for name, text in render_schemas().items():
        path = ROOT / "docs" / "schemas" / name
        assert path.exists() and path.read_text() == text, \
            f"{path} is stale: run `make schemas`"


def test_readers_ignore_unknown_fields() -> None:
    contract = TOPICS["events"]
    example = json.loads(contract.example_path.read_text())[0]
    parsed = contract.model.model_validate({**example, "added_in_a_later_release": 1})  # type: ignore[union-attr]
    assert not hasattr(parsed, "added_in_a_later_release")


@pytest.mark.parametrize("spec", CONSUMERS, ids=lambda s: s.name)
def test_readers_skip_unknown_variants_but_reject_bad_messages(spec) -> None:
    """A status, kind or type added by a newer producer is skipped, never dead-lettered;
    any other validation error still is."""
    from pydantic import ValidationError

    from shared.kafka.consumer import _unknown_variant

    short = spec.topic.removeprefix(SETTINGS.topic_prefix)
    example = json.loads(TOPICS[short].example_path.read_text())[0]
    nested = next((f for f in ("event",) if isinstance(example.get(f), dict)), None)
    field = next((f for f in ("status", "kind", "type") if f in example), None)
    if field is None and nested is None:
        pytest.skip(f"{short} has no variant field")
    newer_example = ({**example, field: "added_in_a_later_release"} if field else
                     {**example, nested: {**example[nested], "type": "added_in_a_later_release"}})
    with pytest.raises(ValidationError) as newer:
        spec.model.model_validate_json(json.dumps(newer_example))
    assert _unknown_variant(newer.value) == (field or f"{nested}.type")
    with pytest.raises(ValidationError) as broken:
        spec.model.model_validate_json(json.dumps({**example, "workspace_id": ""}))
    assert _unknown_variant(broken.value) is None
    with pytest.raises(ValidationError) as both:
        spec.model.model_validate_json(
            json.dumps({**newer_example, "workspace_id": ""}))
    assert _unknown_variant(both.value) is None
