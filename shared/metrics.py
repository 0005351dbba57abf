"""Prometheus metrics shared by all services (one process per service in production)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "touchpoint_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "touchpoint_http_request_seconds", "HTTP request latency", ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CONSUMED = Counter("touchpoint_consumed_messages_total", "Messages consumed", ["consumer"])
DEAD_LETTERED = Counter("touchpoint_dead_lettered_total", "Messages sent to the DLQ", ["consumer"])
SKIPPED_UNKNOWN = Counter(
    "touchpoint_skipped_unknown_total",
    "Messages skipped because a status, kind or type value is newer than this reader",
    ["consumer", "field"],
)
BATCH_RECORDS = Histogram(
    "touchpoint_consumer_batch_records", "Records per polled batch", ["consumer"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
LAG = Gauge(
    "touchpoint_consumer_lag", "Records behind the partition's end after the last commit",
    ["consumer", "partition"],
)
PAUSED = Gauge("touchpoint_consumer_paused", "1 while a consumer waits out an outage", ["consumer"])
HANDLER_SECONDS = Histogram(
    "touchpoint_handler_seconds", "Time to handle one polled batch", ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
OUTBOX_PUBLISHED = Counter(
    "touchpoint_outbox_published_total", "Outbox rows published", ["service"]
)
