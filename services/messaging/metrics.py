"""Messaging's own Prometheus metrics (served on /metrics with the shared ones)."""

from prometheus_client import Counter, Histogram

SENDS = Counter("touchpoint_messaging_sends_total",
                "Messages recorded, by channel and outcome (sent, bounced, failed, "
                "suppressed, ...), counted once their outcome is committed", ["channel", "outcome"])
PROVIDER_SECONDS = Histogram(
    "touchpoint_messaging_provider_seconds",
    "One provider call (one attempt), by provider route and result (ok, transient, "
    "permanent, error)", ["provider", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
