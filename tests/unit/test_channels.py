"""The channel vocabulary is defined once (shared/contracts/send.py) and agrees with itself
and with messaging's provider registry."""

from typing import get_args

from services.messaging.providers.registry import PROVIDERS, ProviderName
from shared.contracts.profile import ProfileSnapshot
from shared.contracts.send import (
    ADDRESS_FIELD,
    CHANNEL_LABEL,
    PROFILE_CHANNELS,
    Channel,
    ChannelName,
    ProfileChannel,
    Recipient,
)

CHANNELS = {c.value for c in Channel}


def test_the_channel_types_name_every_channel() -> None:
    assert set(get_args(ChannelName)) == CHANNELS
    assert PROFILE_CHANNELS == get_args(ProfileChannel)
    assert set(PROFILE_CHANNELS) == CHANNELS - {"webhook"}
    assert set(ADDRESS_FIELD) == set(CHANNEL_LABEL) == CHANNELS


def test_address_fields_exist_where_addresses_live() -> None:
    assert set(ADDRESS_FIELD.values()) <= set(Recipient.model_fields)
    assert {ADDRESS_FIELD[c] for c in PROFILE_CHANNELS} <= set(ProfileSnapshot.model_fields)


def test_provider_names_are_the_registry_and_serve_known_channels() -> None:
    assert [p.value for p in ProviderName] == list(PROVIDERS)  # type: ignore[attr-defined]
    assert {kind.channel for kind in PROVIDERS.values()} == CHANNELS
