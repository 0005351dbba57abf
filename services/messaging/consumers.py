"""Messaging's consumer table and background workers."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from services.messaging import tables
from services.messaging.handlers import handle_send_commands
from services.messaging.parts import Messaging
from services.messaging.profile_changes import CONSUMER, handle_profile_changes
from services.messaging.retries import RetrySweeper
from services.messaging.settings import MessagingSettings
from shared.contracts import ProfileChange, SendCommand
from shared.db.retention import RetentionWorker, inbox_prune
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime, Worker


def consumers(rt: ServiceRuntime, m: Messaging | None = None) -> list[ConsumerSpec]:
    s = rt.settings
    m = m or Messaging(MessagingSettings.from_base(s))
    return [
        ConsumerSpec("messaging.send-commands", s.topic("send-commands"), SendCommand,
                     partial(handle_send_commands, rt, m)),
        ConsumerSpec(CONSUMER, s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt)),
    ]


def workers(rt: ServiceRuntime, m: Messaging) -> list[Worker]:
    # Only messaging.profile-changes uses the inbox; sends dedupe on idempotency keys.
    keep = timedelta(hours=rt.settings.inbox_retention_hours)
    return [RetentionWorker(rt.engine, {"inbox": inbox_prune(tables.inbox, keep)},
                            rt.settings.retention_interval_s),
            RetrySweeper(rt, m)]
