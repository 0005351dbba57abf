"""Ingest's own Prometheus metrics (served on /metrics with the shared ones)."""

from prometheus_client import Counter

# Per event: published (new), duplicate (its messageId was accepted before), rejected
# (invalid, 4xx), unavailable (a dependency was away: 503, the client retries).
EVENTS = Counter("touchpoint_ingest_events_total", "Tracking calls by outcome", ["outcome"])
PUBLISHED = EVENTS.labels("published")
DUPLICATE = EVENTS.labels("duplicate")
REJECTED = EVENTS.labels("rejected")
UNAVAILABLE = EVENTS.labels("unavailable")
