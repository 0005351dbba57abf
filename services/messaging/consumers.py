"""Messaging's consumer table."""

from __future__ import annotations

from functools import partial

from services.messaging.handlers import handle_send_commands
from shared.contracts import SendCommand
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [ConsumerSpec("messaging.send-commands", rt.settings.topic("send-commands"),
                         SendCommand, partial(handle_send_commands, rt))]
