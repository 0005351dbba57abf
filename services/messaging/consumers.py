"""Messaging's consumer table."""

from __future__ import annotations

from functools import partial

from services.messaging.bootstrap import Messaging
from services.messaging.handlers import handle_send_commands
from services.messaging.profile_changes import CONSUMER, handle_profile_changes
from services.messaging.settings import MessagingSettings
from shared.contracts import ProfileChange, SendCommand
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime


def consumers(rt: ServiceRuntime, m: Messaging | None = None) -> list[ConsumerSpec]:
    s = rt.settings
    m = m or Messaging(MessagingSettings.from_base(s))
    return [
        ConsumerSpec("messaging.send-commands", s.topic("send-commands"), SendCommand,
                     partial(handle_send_commands, rt, m)),
        ConsumerSpec(CONSUMER, s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt)),
    ]
