import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_defaults_and_topic_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCHPOINT_TOPIC_PREFIX", raising=False)
    assert Settings().topic("events") == "touchpoint.events"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    assert Settings().kafka_bootstrap == "k1:9092,k2:9092"


@pytest.mark.parametrize(("field", "value"), [
    ("database_url", "postgresql://x/y"),
    ("topic_prefix", "has space"),
    ("topic_partitions", 0),
])
def test_bad_values_fail_fast(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_prod_refuses_short_keys() -> None:
    with pytest.raises(ValidationError):
        Settings(env="prod", bootstrap_admin_key="short")
