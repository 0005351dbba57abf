"""Ingest's settings: the shared ones, with a producer that does not linger."""

from __future__ import annotations

from typing import Self

from shared.settings import Settings


class IngestSettings(Settings):
    @classmethod
    def from_base(cls, settings: Settings) -> Self:
        """As `Settings.from_base`; unless TOUCHPOINT_PRODUCER_LINGER_MS is given, the
        producer sends at once: every request waits for its own acks, so lingering only
        adds latency (concurrent requests still share a produce request in flight)."""
        ingest = super().from_base(settings)
        if "producer_linger_ms" not in settings.model_fields_set:
            ingest = ingest.model_copy(update={"producer_linger_ms": 0})
        return ingest
